"""Emailing-platform webhook adapters: verify the raw request, then parse it into our events.

Adapters are plugins: each module registered under the entry-point group
``gatekeeper.webhooks`` exposes ``adapter``, an object satisfying ``webhooks.base.Adapter``.
A third party adds a provider by declaring its own entry point; nothing here changes.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from webhooks.base import (
    Adapter,
    AuthenticationError,
    InboundRequest,
    NormalizedEvent,
    ParseResult,
    PayloadError,
    ReplayError,
    ReplayGuard,
    UpstreamError,
    WebhookError,
)

ENTRY_POINT_GROUP = "gatekeeper.webhooks"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AuthenticationError",
    "InboundRequest",
    "NormalizedEvent",
    "ParseResult",
    "PayloadError",
    "ReplayError",
    "ReplayGuard",
    "UpstreamError",
    "WebhookError",
    "load_adapters",
]


def load_adapters() -> dict[str, Adapter]:
    """Every registered adapter by entry-point name (the ``{provider}`` of the URL)."""
    adapters: dict[str, Adapter] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        adapter: Adapter = getattr(loaded, "adapter", loaded)
        adapters[entry_point.name] = adapter
    return adapters
