"""Schemathesis hooks for `scripts/schemathesis.sh`: a client of Tally's payments API as the spec asks it to be.

A client sends a fresh Idempotency-Key with every new request (the spec: the same key with another request is 422
`idempotency_key_reused`, which schemathesis would otherwise count as a valid request rejected, since its
generators repeat small values such as "000"). A request that carries no key keeps carrying none, so the 400 for a
missing key is still tested. The keys are URL-safe random text, not UUIDs: a UUID's dash-separated digit groups look
like a card number to the PAN scan about once in 10^5 keys, and the API refuses those (422, I7).
"""

import secrets

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            headers[name] = "st_" + secrets.token_urlsafe(24)
