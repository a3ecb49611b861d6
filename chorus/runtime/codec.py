"""Payload encryption: an AES-256-GCM ``PayloadCodec`` so workflow history holds no plaintext.

With ``CHORUS_CODEC_KEYS`` set, every payload a Chorus client or worker writes (workflow and
activity inputs and results, signals, updates, queries, memos, summaries and failure details) is
encrypted before it leaves the process; Temporal stores ciphertext only. The Temporal UI and
CLI show it decoded through the codec server (``starter/codec_server.py``) for people allowed to
use it.

Format (the one used by temporalio/samples-python ``encryption/codec.py``, whose Go and
TypeScript counterparts use the same layout): the whole serialized ``Payload`` proto, including its
original ``encoding`` metadata, is encrypted; the new payload's ``data`` is
``nonce (12 bytes) || ciphertext || GCM tag (16 bytes)`` and its metadata is
``encoding: binary/encrypted`` and ``encryption-key-id: <key id>``.

Keys come from the environment as ``CHORUS_CODEC_KEYS="k2:<base64 32 bytes>,k1:<base64 32
bytes>"``. The first key encrypts new payloads; every listed key decrypts, so a key is rotated by
putting a new one first and keeping the old ones listed while histories written with them are
still read (retention). Key material never appears in a log line, exception or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from chorus.contracts.errors import ChorusInputError

ENCODING: Final = b"binary/encrypted"
"""``encoding`` metadata value of an encrypted payload."""
KEY_ID_METADATA: Final = "encryption-key-id"
"""Metadata key naming the key a payload was encrypted with."""
KEYS_ENV: Final = "CHORUS_CODEC_KEYS"
"""Environment variable holding the key list."""
KEY_BYTES: Final = 32
"""AES-256 key length in bytes."""
NONCE_BYTES: Final = 12
"""GCM nonce length in bytes (NIST SP 800-38D's recommended 96-bit IV)."""
_TAG_BYTES: Final = 16
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CodecError(ChorusInputError):
    """A payload cannot be decrypted, or the key configuration is invalid.

    Messages name key ids and the rule that failed, never key material.
    """


def generate_key() -> str:
    """Return a new random AES-256 key, base64-encoded (44 characters), for ``CHORUS_CODEC_KEYS``.

    Returns:
        ``base64(os.urandom(32))``; prefix it with a key id: ``k3:<key>``.

    """
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """Parse a ``CHORUS_CODEC_KEYS`` value into ``(key id, key)`` pairs, active key first.

    Args:
        spec: Comma-separated ``<key id>:<base64 key>`` entries, e.g. ``"k2:AAAA...=,k1:BBBB...="``.
            Key ids are 1-64 characters of ``A-Z a-z 0-9 . _ -``; each key is standard base64
            of exactly 32 bytes. Whitespace around entries is ignored.

    Returns:
        The pairs in the given order; the first one encrypts new payloads.

    Raises:
        CodecError: The list is empty, an entry is not ``<key id>:<base64 key>``, a key id is
            invalid or repeated, or a key is not valid base64 of 32 bytes. The message names the
            entry's position or key id and the rule, never the key.

    """
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if not entries:
        raise CodecError(f"{KEYS_ENV} is empty: expected '<key id>:<base64 32-byte key>,...'")
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate(entries, start=1):
        key_id, sep, encoded = (part.strip() for part in entry.partition(":"))
        if not sep or not _KEY_ID.fullmatch(key_id):
            # The entry is not echoed: without a valid "<id>:" prefix it may be a bare key.
            raise CodecError(
                f"{KEYS_ENV} entry {position} is not '<key id>:<base64 key>' with a key id of "
                "1-64 characters from A-Z a-z 0-9 . _ -"
            )
        if any(key_id == seen for seen, _ in keys):
            raise CodecError(f"{KEYS_ENV} lists key id {key_id!r} twice")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CodecError(f"key {key_id!r} in {KEYS_ENV} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise CodecError(
                f"key {key_id!r} in {KEYS_ENV} decodes to {len(key)} bytes; AES-256-GCM needs "
                f"exactly {KEY_BYTES} (make one with `chorus codec keygen`)"
            )
        keys.append((key_id, key))
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec with key ids in the payload metadata and key rotation.

    Encryption uses the first (active) key and a fresh random 12-byte nonce per payload, so equal
    plaintexts give different ciphertexts. Decryption picks the key named by the payload's
    ``encryption-key-id``; payloads whose ``encoding`` is not ``binary/encrypted`` (written
    before encryption was turned on) pass through unchanged.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        """Build a codec from ``(key id, 32-byte key)`` pairs, the active key first.

        Args:
            keys: At least one pair, as returned by :func:`parse_keys`.

        Raises:
            CodecError: No keys, a repeated or invalid key id, or a key that is not 32 bytes.

        """
        if not keys:
            raise CodecError("EncryptionCodec needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise CodecError("invalid key id: use 1-64 characters from A-Z a-z 0-9 . _ -")
            if key_id in self._ciphers:
                raise CodecError(f"key id {key_id!r} is given twice")
            if len(key) != KEY_BYTES:
                raise CodecError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256-GCM needs exactly {KEY_BYTES}"
                )
            self._ciphers[key_id] = AESGCM(key)
        self._active_key_id = keys[0][0]

    @classmethod
    def from_spec(cls, spec: str) -> EncryptionCodec:
        """Build a codec from a ``CHORUS_CODEC_KEYS`` string (see :func:`parse_keys`).

        Raises:
            CodecError: The string is not a valid key list.

        """
        return cls(parse_keys(spec))

    @property
    def active_key_id(self) -> str:
        """Id of the key that encrypts new payloads."""
        return self._active_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key that can decrypt, active first."""
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        return f"EncryptionCodec(active_key_id={self._active_key_id!r}, key_ids={self.key_ids!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload (the whole serialized proto) with the active key.

        Args:
            payloads: Payloads from the payload converter; not mutated.

        Returns:
            One ``binary/encrypted`` payload per input, in order.

        """
        cipher = self._ciphers[self._active_key_id]
        key_id = self._active_key_id.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id},
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt ``binary/encrypted`` payloads with the key their metadata names.

        Args:
            payloads: Payloads as stored in history; not mutated.

        Returns:
            The original payloads, in order; unencrypted inputs are returned as they are.

        Raises:
            CodecError: A payload names no key id or a key id not configured here (the message
                names it), or it fails GCM authentication (altered, or the key under that id
                changed).

        """
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                known = ", ".join(repr(k) for k in self._ciphers)
                raise CodecError(
                    f"payload was encrypted with key id {key_id!r}, which is not configured "
                    f"(known: {known}); list that key in {KEYS_ENV} to read it"
                    if key_id
                    else f"encrypted payload has no {KEY_ID_METADATA} metadata"
                )
            data = payload.data
            try:
                if len(data) < NONCE_BYTES + _TAG_BYTES:
                    raise InvalidTag
                plaintext = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
            except InvalidTag:
                raise CodecError(
                    f"payload encrypted with key id {key_id!r} failed authentication: it was "
                    "altered, or the key listed under that id is not the one that encrypted it"
                ) from None
            decoded.append(Payload.FromString(plaintext))
        return decoded
