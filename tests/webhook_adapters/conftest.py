"""Fixtures for the webhook adapter tests: captured-shape payloads and process-edge doubles."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

PAYLOADS = Path(__file__).parent / "payloads"
# Shortly after the captured events (2024-05-06T12:54Z to 13:05Z), inside Mailgun's 15 minutes.
NOW = datetime(2024, 5, 6, 13, 6, tzinfo=UTC)


class MemoryReplayGuard:
    """The shell keeps used tokens in the database; this double keeps them in a set."""

    def __init__(self) -> None:
        self.used: set[tuple[str, str]] = set()

    def seen(self, provider: str, token: str, *, now: datetime) -> bool:
        if (provider, token) in self.used:
            return True
        self.used.add((provider, token))
        return False


@pytest.fixture
def guard() -> MemoryReplayGuard:
    return MemoryReplayGuard()


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def payload() -> Callable[[str, str], Any]:
    def load(provider: str, name: str) -> Any:
        return json.loads((PAYLOADS / provider / f"{name}.json").read_text())

    return load
