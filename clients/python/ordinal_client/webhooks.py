"""Verifying Ordinal's webhook requests on the receiving side.

    from ordinal_client.webhooks import verify_signature
    event = verify_signature(secret, body, request.headers)   # raises SignatureError

The signature is HMAC-SHA256 of "<X-Ordinal-Timestamp>.<raw body>" with the webhook's
secret, sent as X-Ordinal-Signature: v1=<hex>. A timestamp older (or newer) than
`tolerance` seconds is refused, so a captured request cannot be replayed later; drop an
X-Ordinal-Event-Id you have already handled, since retries and redeliveries resend it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ordinal_client.errors import SignatureError

DEFAULT_TOLERANCE = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str], *, tolerance: int = DEFAULT_TOLERANCE,
                     now: float | None = None) -> dict[str, Any]:
    """The event (the parsed body) if the request is Ordinal's and fresh; SignatureError
    otherwise. `headers` is any case-insensitive mapping, or a plain dict."""
    lowered = {key.lower(): value for key, value in headers.items()}
    given, stamp = lowered.get("x-ordinal-signature", ""), lowered.get("x-ordinal-timestamp", "")
    if not stamp.isdigit():
        raise SignatureError("missing or malformed X-Ordinal-Timestamp")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise SignatureError(f"X-Ordinal-Timestamp is more than {tolerance} s away: a replay, or a clock off")
    if not hmac.compare_digest(given.encode(), sign(secret, int(stamp), body).encode()):
        raise SignatureError("X-Ordinal-Signature does not match the body and the secret")
    event = json.loads(body)
    if event.get("id") != lowered.get("x-ordinal-event-id"):
        raise SignatureError("X-Ordinal-Event-Id differs from the body's id")
    return dict(event)
