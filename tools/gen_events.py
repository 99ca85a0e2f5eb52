#!/usr/bin/env python3
"""Deterministic generator of Segment-spec-like tracking events (NDJSON).

Usage: python3 tools/gen_events.py N [SEED] > events.ndjson
`python3 tools/gen_events.py 1000 7` writes examples/events.ndjson, the
reference data of the tests and of every number in BENCHMARKS.md, byte for
byte (tests/benchmarks.rs checks it). Standard library only.
Events mix track/page/identify calls with nested context, traits that hold
direct identifiers (email, phone, name), sensitive attributes (gender, health
interests), IPs (v4 and v6), URLs whose query strings leak e-mail addresses,
and a consent block. About 1.2 KB per event on average.
"""
import json, random, sys, uuid

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 42)

FIRST = ["ana", "ben", "chloe", "dmitri", "eva", "farid", "grace", "hiro", "ines", "jon"]
LAST = ["smith", "garcia", "mueller", "kowalski", "tanaka", "okafor", "rossi", "dubois"]
EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed",
          "Signed Up", "Newsletter Subscribed", "Video Played", "Search Performed"]
PAGES = ["/", "/shoes", "/shoes/running", "/cart", "/checkout", "/account", "/blog/privacy"]
UAS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
       "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"]
PURPOSES = ["analytics", "personalisation", "advertising"]

def uid():
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))

def ip():
    if rnd.random() < 0.8:
        return ".".join(str(rnd.randint(1, 254)) for _ in range(4))
    return ":".join("%x" % rnd.getrandbits(16) for _ in range(8))

def event(i):
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    email = f"{first}.{last}{rnd.randint(1, 999)}@example.com"
    kind = rnd.choices(["track", "page", "identify"], [6, 3, 1])[0]
    path = rnd.choice(PAGES)
    query = f"?utm_source=newsletter&utm_medium=email&email={email.replace('@', '%40')}" if rnd.random() < 0.2 else "?utm_source=google&utm_medium=cpc"
    granted = [p for p in PURPOSES if rnd.random() < 0.75]
    e = {
        "type": kind,
        "messageId": uid(),
        "anonymousId": uid(),
        "userId": f"user-{rnd.randint(1, 200000)}" if rnd.random() < 0.6 else None,
        "timestamp": f"2026-11-{rnd.randint(1, 21):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}.{rnd.randint(0, 999):03d}Z",
        "sentAt": "2026-11-21T10:00:00.000Z",
        "context": {
            "ip": ip(),
            "userAgent": rnd.choice(UAS),
            "locale": rnd.choice(["en-GB", "de-DE", "fr-FR", "ja-JP"]),
            "library": {"name": "analytics.js", "version": "4.1.0"},
            "page": {"path": path, "url": f"https://shop.example.com{path}{query}",
                     "referrer": "https://www.google.com/", "title": "Shop", "search": query},
            "campaign": {"source": "newsletter", "medium": "email", "name": f"autumn-{rnd.randint(1, 9)}"},
            "device": {"id": uid(), "type": rnd.choice(["desktop", "mobile", "tablet"]), "advertisingId": uid()},
            "os": {"name": rnd.choice(["Windows", "iOS", "Linux"]), "version": f"{rnd.randint(10, 17)}.{rnd.randint(0, 9)}"},
            "screen": {"width": rnd.choice([390, 1440, 1920]), "height": rnd.choice([844, 900, 1080])},
            "location": {"city": rnd.choice(["London", "Berlin", "Paris", "Osaka"]), "country": rnd.choice(["GB", "DE", "FR", "JP"]),
                         "latitude": round(rnd.uniform(-60, 60), 6), "longitude": round(rnd.uniform(-120, 140), 6)},
            "consent": {"purposes": granted, "gpc": rnd.random() < 0.1},
            "traits": {"email": email, "name": f"{first.title()} {last.title()}", "phone": f"+44 7{rnd.randint(100000000, 999999999)}",
                       "gender": rnd.choice(["female", "male", "nonbinary"]), "birthday": f"19{rnd.randint(50, 99)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}",
                       "address": {"street": f"{rnd.randint(1, 200)} High Street", "city": "London", "postalCode": "SW1A 1AA"}},
        },
        "integrations": {"All": True},
    }
    if kind == "track":
        e["event"] = rnd.choice(EVENTS)
        e["properties"] = {"product_id": f"sku-{rnd.randint(1, 5000)}", "price": round(rnd.uniform(5, 300), 2), "currency": "GBP",
                           "quantity": rnd.randint(1, 4), "category": rnd.choice(["shoes", "shirts", "health-supplements"]),
                           "coupon": None, "health_interest": rnd.choice([None, "diabetes", "pregnancy"])}
    elif kind == "page":
        e["name"] = "Shop"
        e["properties"] = {"path": path, "url": e["context"]["page"]["url"], "title": "Shop"}
    else:
        e["traits"] = dict(e["context"]["traits"])
    return e

out = sys.stdout
for i in range(N):
    out.write(json.dumps(event(i), separators=(",", ":")))
    out.write("\n")
