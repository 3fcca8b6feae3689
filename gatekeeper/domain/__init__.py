"""The pure domain core: facts and a policy in, a verdict or a retention clock out.

No I/O, no clock, no framework: the shell gathers facts, passes `as_of` and the policy, and
performs the effects. See RULES.md for the rules and each module for its legal sources.
"""

from gatekeeper.domain.calendar import easter_sunday, french_holidays, phone_call_allowed
from gatekeeper.domain.errors import DomainError, FactError, PolicyError
from gatekeeper.domain.facts import (
    ALL_CHANNELS,
    CHANNELS,
    PURPOSES,
    Audience,
    Campaign,
    Channel,
    ConsentFact,
    ContactFacts,
    Contract,
    InterestFact,
    Objection,
    Purchase,
    Purpose,
    SuppressionFact,
)
from gatekeeper.domain.gate import GATE, Decision, Step, Verdict, decide
from gatekeeper.domain.policy import Policy, policy_from_mapping, policy_from_toml
from gatekeeper.domain.profile import (
    ChannelConsent,
    ContactSummary,
    GateInstants,
    GateProfile,
    classify_email,
    summarise,
)
from gatekeeper.domain.reasons import REASONS
from gatekeeper.domain.retention import (
    RetentionClock,
    add_years,
    compute_clock,
    interest_counts,
    retention_state,
)
from gatekeeper.domain.situation import Situation, situation_for

__all__ = [
    "ALL_CHANNELS",
    "CHANNELS",
    "GATE",
    "PURPOSES",
    "REASONS",
    "Audience",
    "Campaign",
    "Channel",
    "ChannelConsent",
    "ConsentFact",
    "ContactFacts",
    "ContactSummary",
    "Contract",
    "Decision",
    "DomainError",
    "FactError",
    "GateInstants",
    "GateProfile",
    "InterestFact",
    "Objection",
    "Policy",
    "PolicyError",
    "Purchase",
    "Purpose",
    "RetentionClock",
    "Situation",
    "Step",
    "SuppressionFact",
    "Verdict",
    "add_years",
    "classify_email",
    "compute_clock",
    "decide",
    "easter_sunday",
    "french_holidays",
    "interest_counts",
    "phone_call_allowed",
    "policy_from_mapping",
    "policy_from_toml",
    "retention_state",
    "situation_for",
    "summarise",
]
