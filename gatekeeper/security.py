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
        self._key = key.encode()

    def coordinate(self, kind: str, normalised: str) -> str:
        # The kind is part of the message so an e-mail and a phone never collide.
        msg = f"{kind}:{normalised}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def api_key(self, key: str) -> str:
        return hmac.new(self._key, b"apikey:" + key.encode(), hashlib.sha256).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)
