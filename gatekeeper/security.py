"""Keyed hashes for suppressed coordinates and API keys.

A plain SHA-256 of an e-mail address is reversible by dictionary; the CNIL asks for a keyed
hash (RULES.md §4), so every stored coordinate hash is an HMAC with the deployment's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "gk_"


class KeyedHasher:
    def __init__(self, key: str) -> None:
        # The keyed state is derived once and copied per message: the gate hashes a whole
        # campaign list, and re-deriving the HMAC pads per call costs several times more.
        self._base = hmac.new(key.encode(), digestmod=hashlib.sha256)

    def _digest(self, message: bytes) -> str:
        h = self._base.copy()
        h.update(message)
        return h.hexdigest()

    def coordinate(self, kind: str, normalised: str) -> str:
        # The kind is part of the message so an e-mail and a phone never collide.
        return self._digest(f"{kind}:{normalised}".encode())

    def fingerprint(self, text: str) -> str:
        return self._digest(b"fact:" + text.encode())

    def api_key(self, key: str) -> str:
        return self._digest(b"apikey:" + key.encode())


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)
