#!/usr/bin/env python3
"""Independent oracle for `veil erase` (docs/policy.md, docs/erasure.md).

Written from the documented pseudonym construction with Python's hmac,
hashlib and base64 only; it shares no code with veil. Reads a JSON request:

  {"keys": {"k1": "<hex>", ...}, "identifiers": ["..."],
   "policies": [{"id": "name@1", "purpose": "analytics", "encoding": "hex",
                 "key_id_prefix": false, "truncate_bytes": 32,
                 "subjects": [{"path": "user.email", "normalise": ["trim", "lowercase"]}]}]}

and writes the list of pseudonyms veil must print, as objects with
identifier_index, policy, purpose, key_id, path, normalise, pseudonym.
"""
import base64
import hashlib
import hmac
import json
import sys

WHITE_SPACE = set(
    "\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def trim(s):
    a, b = 0, len(s)
    while a < b and s[a] in WHITE_SPACE:
        a += 1
    while b > a and s[b - 1] in WHITE_SPACE:
        b -= 1
    return s[a:b]


def purpose_key(key, purpose):
    # HKDF-SHA256 (RFC 5869), salt empty, info "veil/v1/purpose/<purpose>", L = 32.
    prk = hmac.new(b"", key, hashlib.sha256).digest()
    info = b"veil/v1/purpose/" + purpose.encode()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def main():
    req = json.load(sys.stdin)
    out = []
    for i, ident in enumerate(req["identifiers"]):
        ident = trim(ident)
        for p in req["policies"]:
            for s in p["subjects"]:
                value = ident
                for step in s["normalise"]:
                    value = trim(value) if step == "trim" else value.lower()
                for key_id in sorted(req["keys"]):
                    k = purpose_key(bytes.fromhex(req["keys"][key_id]), p["purpose"])
                    digest = hmac.new(k, value.encode(), hashlib.sha256).digest()
                    digest = digest[: p["truncate_bytes"]]
                    if p["encoding"] == "hex":
                        text = digest.hex()
                    else:
                        text = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                    if p["key_id_prefix"]:
                        text = key_id + ":" + text
                    out.append({
                        "identifier_index": i,
                        "policy": p["id"],
                        "purpose": p["purpose"],
                        "key_id": key_id,
                        "path": s["path"],
                        "normalise": s["normalise"],
                        "pseudonym": text,
                    })
    json.dump(out, sys.stdout)


main()
