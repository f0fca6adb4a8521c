"""Schemathesis hooks for `scripts/schemathesis.sh`: a client of Tally's payments API as the spec asks it to be.

A client sends a fresh Idempotency-Key (a UUID, as Stripe advises) with every new request (the spec: the same key with another request is 422
`idempotency_key_reused`, which schemathesis would otherwise count as a valid request rejected, since its
generators repeat small values such as "000"). A request that carries no key keeps carrying none, so the 400 for a
missing key is still tested.
"""

import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            headers[name] = str(uuid.uuid4())
