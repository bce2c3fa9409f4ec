"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

    webhook-id         the event id, stable across retries and replays
    webhook-timestamp  Unix seconds of this attempt
    webhook-signature  "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", one per
                       valid secret, separated by spaces (two during a rotation)

A secret is "whsec_" + base64 of 24 random bytes; the key is the decoded bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """One "v1,<base64>" signature of the body with one secret."""
    content = f"{webhook_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secrets_in_use: list[str], webhook_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in use."""
    assert secrets_in_use, "an endpoint always has a secret"
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": " ".join(sign(s, webhook_id, timestamp_s, body) for s in secrets_in_use),
    }
