"""The keyed hashes every stored coordinate, fact key and API key depends on: they must stay
exactly HMAC-SHA256 (RFC 2104), or the suppressions already stored would stop matching."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gatekeeper.security import KeyedHasher


@pytest.mark.parametrize(
    "key",
    ["s3cret", "", "k" * 64, "x" * 65, "clé-à-accents-" * 9],  # empty, one block, longer than a block
)
@pytest.mark.parametrize("message", ["", "paul.martin@example.fr", "+33612345678", "é" * 300])
def test_each_hash_is_the_standard_hmac_sha256(key: str, message: str) -> None:
    hasher = KeyedHasher(key)

    def reference(prefix: str) -> str:
        return hmac.new(key.encode(), (prefix + message).encode(), hashlib.sha256).hexdigest()

    assert hasher.coordinate("email", message) == reference("email:")
    assert hasher.fingerprint(message) == reference("fact:")
    assert hasher.api_key(message) == reference("apikey:")


def test_a_hasher_gives_the_same_answer_every_time_and_other_keys_other_answers() -> None:
    one, again, other = KeyedHasher("a"), KeyedHasher("a"), KeyedHasher("b")
    first = one.coordinate("phone", "+33612345678")
    assert one.coordinate("phone", "+33612345678") == first == again.coordinate("phone", "+33612345678")
    assert other.coordinate("phone", "+33612345678") != first
    assert one.coordinate("email", "+33612345678") != first  # the kind is part of the message
