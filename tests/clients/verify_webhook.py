#!/usr/bin/env python3
"""Verify a Standard Webhooks signature with Python's hmac, independently of Mailroom.

usage: verify_webhook.py SECRET MSG_ID TIMESTAMP SIGNATURE_HEADER < body
Exit 0 when one of the space-separated "v1,<base64>" signatures matches
HMAC-SHA256(base64decode(secret without "whsec_"), "id.timestamp.body").
"""
import base64
import hashlib
import hmac
import sys

secret, msg_id, ts, header = sys.argv[1:5]
body = sys.stdin.buffer.read()
key = base64.b64decode(secret.removeprefix("whsec_"))
expected = base64.b64encode(
    hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
).decode()
for sig in header.split():
    version, _, value = sig.partition(",")
    if version == "v1" and hmac.compare_digest(value, expected):
        sys.exit(0)
print(f"no signature matches (expected v1,{expected})", file=sys.stderr)
sys.exit(1)
