"""Signed run callbacks: the payload a receiver gets, and how it signs and verifies.

A run started with a callback URL (``chorus run ... --callback-url URL`` or
``ChorusClient.start_sequential(..., callback_url=URL)``) POSTs one JSON
:class:`CallbackPayload` to that URL when it ends: succeeded, failed or cancelled. The worker
signs every request with ``CHORUS_CALLBACK_SECRET`` following **Standard Webhooks**
(standardwebhooks.com; the ``standardwebhooks`` package signs and verifies):

``webhook-id``
    ``<workflow id>:<run id>``: the same on every attempt of one run's callback; deduplicate on it.
``webhook-timestamp``
    Unix time in seconds at which this attempt was signed.
``webhook-signature``
    ``v1,<base64 HMAC-SHA256>`` over ``f"{id}.{timestamp}.{body}"``, one entry per secret
    (space-separated) while secrets rotate. The id is signed, so an altered delivery id fails.

``CHORUS_CALLBACK_SECRET`` holds one secret or several, comma-separated, newest first; each
is a Standard Webhooks secret (``whsec_`` + base64 of 24-64 random bytes; ``chorus callbacks
secret`` makes one) or, as before, a plain string whose UTF-8 bytes are the key.

Receivers verify with the library: ``Webhook(secret).verify(body, headers)`` (Python,
JavaScript and other languages: see the README, "Callbacks").

**Deprecated, sent for one more release**: the original headers, whose signature does not
cover the delivery id (a receiver deduplicating on ``X-Chorus-Delivery`` accepted an altered
id):

``X-Chorus-Timestamp``
    Unix time in seconds at which this attempt was signed.
``X-Chorus-Signature``
    ``v1=<hex>``: HMAC-SHA256, keyed with the shared secret, over the bytes
    ``f"{timestamp}.".encode() + body``, hex-encoded. A receiver may see several
    comma-separated ``v1=`` entries; one matching entry is enough.
``X-Chorus-Delivery``
    ``<workflow id>:<run id>``: the same on every attempt of one run's callback, so a receiver
    deduplicates on it and processes the result once.

A receiver verifies a request before trusting it:

1. Read the raw body bytes (before any JSON parsing: re-serialised JSON does not verify).
2. Recompute ``HMAC-SHA256(secret, f"{timestamp}.".encode() + body)`` and compare it with the
   ``v1`` value in constant time (``hmac.compare_digest``).
3. Refuse timestamps more than 5 minutes from its own clock (replayed requests).
4. Deduplicate on ``X-Chorus-Delivery``; answer 2xx once the result is stored.

In Python this is :func:`verify` (deprecated); :func:`sign` is what the worker does.

Delivery retries (see ``activities/callbacks.py``): HTTP 408, 429, 5xx, timeouts and connection
errors are retried with exponential backoff (1 s doubling to 60 s) for up to 24 hours, honouring
``Retry-After``; any other non-2xx answer ends delivery at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as secrets_module
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from standardwebhooks import Webhook

from chorus.contracts.errors import ChorusInputError
from chorus.contracts.models import CallbackPayload as CallbackPayload
from chorus.contracts.models import CallbackStatus as CallbackStatus
from chorus.contracts.models import CallbackTotals as CallbackTotals
from chorus.contracts.validation import url_host as url_host
from chorus.contracts.validation import validate_callback_url as validate_callback_url

WEBHOOK_ID_HEADER: Final = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER: Final = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER: Final = "webhook-signature"
WHSEC_PREFIX: Final = "whsec_"
TIMESTAMP_HEADER: Final = "X-Chorus-Timestamp"
SIGNATURE_HEADER: Final = "X-Chorus-Signature"
DELIVERY_HEADER: Final = "X-Chorus-Delivery"
ATTEMPT_HEADER: Final = "X-Chorus-Attempt"
"""Delivery attempt number (1 = first try); informational, not signed."""
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_S: Final = 300
"""Largest accepted distance between a request's timestamp and the receiver's clock (seconds)."""


class SignatureError(ChorusInputError):
    """A callback request failed verification; the message says which check failed."""


def delivery_id(workflow_id: str, run_id: str, gate: str | None = None) -> str:
    """Return the id of a callback delivery, stable across its attempts.

    ``<wf id>:<run id>`` for a run's outcome; ``<wf id>:<run id>:gate:<announcement>`` for a
    pending gate's announcement or reminder (``gate``: the gate's key and the announcement's
    time), so a receiver that drops repeated ids never drops the outcome after a gate.
    """
    base = f"{workflow_id}:{run_id}"
    return base if gate is None else f"{base}:gate:{gate}"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """Sign a callback body.

    Args:
        secret: The shared secret (``CHORUS_CALLBACK_SECRET`` as UTF-8 bytes).
        timestamp: Unix time in seconds, sent as ``X-Chorus-Timestamp``.
        body: The exact request body bytes.

    Returns:
        Hex HMAC-SHA256 over ``f"{timestamp}.".encode() + body`` (64 characters).

    """
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def callback_secrets(setting: str) -> list[str]:
    """The secrets of ``CHORUS_CALLBACK_SECRET``: comma-separated, newest first.

    Raises:
        ValueError: No secret, or a ``whsec_`` secret that is not valid base64.
    """
    secrets = [s.strip() for s in setting.split(",") if s.strip()]
    if not secrets:
        raise ValueError("CHORUS_CALLBACK_SECRET: no secret given")
    for secret in secrets:
        if secret.startswith(WHSEC_PREFIX):
            try:
                base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
            except binascii.Error:
                raise ValueError(
                    "CHORUS_CALLBACK_SECRET: a whsec_ secret must be base64 after the prefix"
                ) from None
    return secrets


def webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer/verifier of one secret (``whsec_…`` or a plain string)."""
    return Webhook(secret) if secret.startswith(WHSEC_PREFIX) else Webhook(secret.encode())


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return WHSEC_PREFIX + base64.b64encode(secrets_module.token_bytes(32)).decode()


def signed_headers(secret: str, body: bytes, delivery: str, timestamp: int) -> dict[str, str]:
    """Headers of one delivery attempt: Standard Webhooks, plus the deprecated X-Chorus ones.

    Args:
        secret: ``CHORUS_CALLBACK_SECRET``: one secret or several, comma-separated (rotation:
            every one signs, so a receiver holding either verifies).
        body: The exact request body bytes (UTF-8 JSON).
        delivery: The delivery id (see :func:`delivery_id`), sent as ``webhook-id``.
        timestamp: Unix time in seconds.

    Returns:
        A header dict for the HTTP client.

    Raises:
        ValueError: ``secret`` holds no usable secret (see :func:`callback_secrets`).
    """
    keys = callback_secrets(secret)
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    text = body.decode()
    return {
        "Content-Type": "application/json",
        WEBHOOK_ID_HEADER: delivery,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: " ".join(
            webhook(key).sign(msg_id=delivery, timestamp=when, data=text) for key in keys
        ),
        # Deprecated (one more release): the signature does not cover the delivery id.
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: ",".join(
            f"{SIGNATURE_VERSION}={sign(key.encode(), timestamp, body)}" for key in keys
        ),
        DELIVERY_HEADER: delivery,
    }


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Verify a callback request by its deprecated ``X-Chorus-*`` headers.

    Deprecated: verify the Standard Webhooks headers with ``standardwebhooks.Webhook(secret)
    .verify(body, headers)`` (or :func:`webhook`), whose signature also covers the delivery id.

    Args:
        secret: The shared secret (the worker's ``CHORUS_CALLBACK_SECRET`` as UTF-8 bytes).
        headers: Request headers; names are matched case-insensitively.
        body: The raw request body bytes, exactly as received.
        tolerance_s: Largest accepted distance between the timestamp and ``now``, in seconds.
        now: Current Unix time in seconds (default: ``time.time()``).

    Returns:
        The request's timestamp (Unix seconds).

    Raises:
        SignatureError: A header is missing or malformed, the timestamp is outside the
            tolerance, or no ``v1`` signature matches the body.

    Example::

        payload_bytes = await request.body()
        try:
            verify(SECRET, request.headers, payload_bytes)
        except SignatureError:
            return Response(status_code=400)
        payload = CallbackPayload.model_validate_json(payload_bytes)

    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    raw_signature = lowered.get(SIGNATURE_HEADER.lower())
    if raw_timestamp is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    if raw_signature is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} must be Unix seconds, got {raw_timestamp[:40]!r}"
        ) from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {abs(current - timestamp):.0f} s from now, "
            f"outside the {tolerance_s:.0f} s tolerance (replayed request or skewed clock)"
        )
    candidates = [
        value.strip()
        for version, sep, value in (p.strip().partition("=") for p in raw_signature.split(","))
        if sep and version == SIGNATURE_VERSION
    ]
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} has no {SIGNATURE_VERSION}= signature")
    expected = sign(secret, timestamp, body).encode()
    # bytes, not str: compare_digest refuses non-ASCII str; every candidate is compared
    matched = [hmac.compare_digest(expected, c.encode()) for c in candidates]
    if not any(matched):
        raise SignatureError("signature does not match the body (wrong secret or altered body)")
    return timestamp
