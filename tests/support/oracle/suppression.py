#!/usr/bin/env python3
"""Independent oracle for veil's suppression list (docs/erasure.md).

Written from the documented semantics with Python's hmac and hashlib only;
it shares no code with veil. Reads a JSON request on stdin:

  {"key_hex": "...", "key_id": "k1", "identifiers": ["..."],
   "subjects": [{"path": "user.email", "normalise": ["trim", "lowercase"]}],
   "events": ["<one JSON event per string>"]}

and writes {"tokens": {identifier: [token lines]}, "suppressed": [indexes]}:
the token lines `veil suppress` must print for each identifier (one per
distinct form: as given, trimmed, lowercased, both), and the indexes of the
events veil must drop as `suppressed`: those with a listed value among every
scalar at or inside the value at a subject path, and every scalar found on
the way to one (hashed with the normalisation of the first subject path
through that place), or with more than 256 such values.
"""
import hashlib
import hmac
import json
import sys

# Unicode White_Space (what Rust's str::trim removes; Python's strip() also
# removes U+001C..U+001F, which are not White_Space).
WHITE_SPACE = set(
    "\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
MAX_SUBJECT_VALUES = 256


def suppression_key(key: bytes) -> bytes:
    # HKDF-SHA256 (RFC 5869), salt empty, info "veil/v1/suppression", L = 32.
    prk = hmac.new(b"", key, hashlib.sha256).digest()
    return hmac.new(prk, b"veil/v1/suppression\x01", hashlib.sha256).digest()


def trim(s: str) -> str:
    a, b = 0, len(s)
    while a < b and s[a] in WHITE_SPACE:
        a += 1
    while b > a and s[b - 1] in WHITE_SPACE:
        b -= 1
    return s[a:b]


def normalise(s: str, steps) -> str:
    for step in steps:
        s = trim(s) if step == "trim" else s.lower()
    return s


class Number(str):
    """A JSON number kept as its text, as veil hashes it."""


def values_at(node, segments):
    if not segments:
        yield node
        return
    seg, rest = segments[0], segments[1:]
    if seg == "[]":
        if isinstance(node, list):
            for item in node:
                yield from values_at(item, rest)
    elif seg == "*":
        if isinstance(node, dict):
            for v in node.values():
                yield from values_at(v, rest)
    elif isinstance(node, dict) and seg in node:
        yield from values_at(node[seg], rest)


def split(path):
    out = []
    for part in path.split("."):
        name = part.rstrip("[]")
        if name:
            out.append(name)
        out.extend(["[]"] * ((len(part) - len(name)) // 2))
    return out


def scalars(v):
    """Every scalar (null included) inside a container, in order."""
    if isinstance(v, dict):
        for x in v.values():
            yield from scalars(x)
    elif isinstance(v, list):
        for x in v:
            yield from scalars(x)
    else:
        yield v


FORMS = [[], ["trim"], ["lowercase"], ["trim", "lowercase"]]


def main():
    req = json.load(sys.stdin)
    key = suppression_key(bytes.fromhex(req["key_hex"]))
    token = lambda b: hmac.new(key, b, hashlib.sha256).hexdigest()
    tokens = {}
    listed = set()
    for ident in req["identifiers"]:
        lines = []
        # Surrounding white space is not part of a listed identifier; it is
        # hashed in each of its forms.
        for steps in FORMS:
            line = req["key_id"] + ":" + token(normalise(trim(ident), steps).encode())
            if line not in lines:
                lines.append(line)
        tokens[ident] = lines
        listed.update(l.split(":", 1)[1] for l in lines)
    subjects = req["subjects"]
    paths = [split(s["path"]) for s in subjects]
    exact = {tuple(p) for p in paths}
    # Places on the way to a subject path: the first subject (in order)
    # through each names the normalisation a scalar found there gets.
    on_the_way = {}
    for i, p in enumerate(paths):
        for n in range(1, len(p)):
            prefix = tuple(p[:n])
            if prefix not in exact and prefix not in on_the_way:
                on_the_way[prefix] = i
    suppressed = []
    for i, text in enumerate(req["events"]):
        event = json.loads(text, parse_int=Number, parse_float=Number)
        found = []
        for s, p in zip(subjects, paths):
            for v in values_at(event, p):
                if isinstance(v, (dict, list)):
                    found.extend((x, s["normalise"]) for x in scalars(v))
                else:
                    found.append((v, s["normalise"]))
        for prefix, j in on_the_way.items():
            for v in values_at(event, list(prefix)):
                if not isinstance(v, (dict, list)):
                    found.append((v, subjects[j]["normalise"]))
        if len(found) > MAX_SUBJECT_VALUES:
            suppressed.append(i)
            continue
        for v, steps in found:
            if v is None:
                continue
            if isinstance(v, bool):
                raw = "true" if v else "false"
            elif isinstance(v, Number):
                raw = str(v)
            else:
                raw = v
            if token(normalise(raw, steps).encode("utf-8", "surrogatepass")) in listed:
                suppressed.append(i)
                break
    json.dump({"tokens": tokens, "suppressed": suppressed}, sys.stdout)


main()
