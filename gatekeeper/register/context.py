"""What the register's services need besides a session: the policy, the keyed hasher and the
region for national phone numbers. Built once per app (or CLI run) from the settings."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.config import Settings
from gatekeeper.domain.policy import Policy, policy_from_mapping
from gatekeeper.security import KeyedHasher


@dataclass(frozen=True, slots=True)
class RegisterContext:
    policy: Policy
    hasher: KeyedHasher
    region: str


def load_policy(path: Path) -> Policy:
    with path.open("rb") as fh:
        return policy_from_mapping(tomllib.load(fh))


def context_from(settings: Settings) -> RegisterContext:
    return RegisterContext(
        policy=load_policy(settings.policy_path),
        hasher=KeyedHasher(settings.hash_key),
        region=settings.default_region,
    )
