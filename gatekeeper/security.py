"""Keyed hashes for suppressed coordinates and API keys.

A plain SHA-256 of an e-mail address is reversible by dictionary; the CNIL asks for a keyed
hash (RULES.md §4), so every stored coordinate hash is an HMAC with the deployment's secret.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "gk_"
_BLOCK = 64  # SHA-256's block size in bytes


class KeyedHasher:
    def __init__(self, key: str) -> None:
        # HMAC (RFC 2104) as its two keyed SHA-256 states, derived once and copied per message:
        # the gate and the import hash whole lists, and copying two hashlib objects costs half
        # of copying an hmac.HMAC (which copies both and wraps them in Python).
        self._key = key
        block = key.encode()
        if len(block) > _BLOCK:
            block = hashlib.sha256(block).digest()
        block = block.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __reduce__(self) -> tuple[type[KeyedHasher], tuple[str]]:
        # hashlib states do not pickle: a hasher crosses to the import's reading process (our
        # own child, through its stdin pipe) as its key and is derived again there.
        return KeyedHasher, (self._key,)

    def _digest(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` in hex (equal to ``hmac.new(key, message, sha256)``, tested)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def coordinate(self, kind: str, normalised: str) -> str:
        # The kind is part of the message so an e-mail and a phone never collide.
        return self._digest(f"{kind}:{normalised}".encode())

    def fingerprint(self, text: str) -> str:
        return self._digest(b"fact:" + text.encode())

    def api_key(self, key: str) -> str:
        return self._digest(b"apikey:" + key.encode())


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)
