"""Campaign objects from JSON or TOML into the domain's ``Campaign``, with named errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gatekeeper.domain import Campaign
from gatekeeper.errors import ValidationError
from gatekeeper.register.schema import (
    CHANNELS,
    Problems,
    Spec,
    apply_specs,
    boolean,
    instant,
    one_of,
    str_list,
)
from gatekeeper.register.schema import text as text_field

PURPOSES = ("commercial", "informational", "charity")
CAMPAIGN_SPECS: dict[str, Spec] = {
    "channel": Spec(one_of(*CHANNELS), required=True),
    "purpose": Spec(one_of(*PURPOSES), required=True),
    "sender": Spec(text_field, required=True),
    "sender_nonprofit": Spec(boolean),
    "product_category": Spec(text_field),
    "topic_tags": Spec(str_list),
    "professional_relevance": Spec(boolean),
    "partner": Spec(text_field),
    "sector": Spec(text_field),
    "send_at": Spec(instant),
    "name": Spec(text_field),
}


def parse_campaign(raw: Any, default_send_at: datetime) -> tuple[Campaign, dict[str, Any]]:
    """The domain campaign and the clean values (for storage); 422 naming each bad field."""
    if not isinstance(raw, Mapping):
        raise ValidationError(
            "campaign must be an object", [{"field": "campaign", "problem": "not an object"}]
        )
    problems = Problems()
    values = apply_specs(raw, CAMPAIGN_SPECS, 0, problems)
    unknown = sorted(set(raw) - set(CAMPAIGN_SPECS) - {"id"})
    for key in unknown:
        problems.add(0, key, "unknown campaign field")
    if values is None or problems:
        details = [{"field": f"campaign.{p['field']}", "problem": p["problem"]} for p in problems.items]
        raise ValidationError("invalid campaign", details)
    send_at = values["send_at"] or default_send_at
    campaign = Campaign(
        channel=values["channel"],
        purpose=values["purpose"],
        sender=values["sender"],
        send_at=send_at,
        sender_nonprofit=bool(values["sender_nonprofit"]),
        product_category=values["product_category"],
        topic_tags=frozenset(values["topic_tags"] or ()),
        professional_relevance=bool(values["professional_relevance"]),
        partner=values["partner"],
        sector=values["sector"],
    )
    return campaign, {**values, "send_at": send_at}
