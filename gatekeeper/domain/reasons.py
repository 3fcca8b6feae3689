"""Reason codes: a public contract (RULES.md §3). Never renamed, only added.

`REASONS` maps each code to (meaning, legal source); the README table is generated from it.
"""

from __future__ import annotations

from typing import Final

ADDRESS_INVALID: Final = "address.invalid"
SUPPRESSED_UNSUBSCRIBE: Final = "suppressed.unsubscribe"
SUPPRESSED_HARD_BOUNCE: Final = "suppressed.hard_bounce"
SUPPRESSED_COMPLAINT: Final = "suppressed.complaint"
SUPPRESSED_ERASURE: Final = "suppressed.erasure"
SUPPRESSED_MANUAL: Final = "suppressed.manual"
SUPPRESSED_BLOCTEL: Final = "suppressed.bloctel"
BLOCTEL_NOT_CHECKED: Final = "bloctel.not_checked"
CONTACT_UNKNOWN: Final = "contact.unknown"
RETENTION_EXPIRED: Final = "retention.expired"
SOURCE_NO_VALID_CONSENT: Final = "source.no_valid_consent"
PURPOSE_INCOMPATIBLE: Final = "purpose.incompatible"
SECTOR_BANNED: Final = "sector.banned"
CONSENT_MISSING: Final = "consent.missing"
CONSENT_WITHDRAWN: Final = "consent.withdrawn"
CONSENT_INVALID: Final = "consent.invalid"
CONSENT_EXPIRED: Final = "consent.expired"
SOFT_OPT_IN_NOT_ANALOGOUS: Final = "soft_opt_in.not_analogous"
SOFT_OPT_IN_NOT_CLIENT: Final = "soft_opt_in.not_client"
B2B_UNRELATED_SUBJECT: Final = "b2b.unrelated_subject"
PHONE_OUTSIDE_HOURS: Final = "phone.outside_hours"
PHONE_TOO_FREQUENT: Final = "phone.too_frequent"

BASIS_CONSENT: Final = "basis.consent"
BASIS_SOFT_OPT_IN: Final = "basis.soft_opt_in"
BASIS_B2B_OPT_OUT: Final = "basis.b2b_opt_out"
BASIS_GENERIC_ADDRESS: Final = "basis.generic_address"
BASIS_OPT_OUT: Final = "basis.opt_out"
BASIS_CHARITY: Final = "basis.charity"
BASIS_CONTRACT_IN_PROGRESS: Final = "basis.contract_in_progress"
BASIS_INFORMATIONAL: Final = "basis.informational"

_L34_5 = "CPCE L34-5"
_CNIL_REF = "CNIL délibération 2021-131"

REASONS: Final[dict[str, tuple[str, str]]] = {
    ADDRESS_INVALID: ("Unparseable or invalid coordinate for the channel", "GDPR art. 5(1)(d)"),
    SUPPRESSED_UNSUBSCRIBE: ("The coordinate unsubscribed / objected", "GDPR art. 21; " + _L34_5),
    SUPPRESSED_HARD_BOUNCE: ("The address hard-bounced", "GDPR art. 5(1)(d) (accuracy)"),
    SUPPRESSED_COMPLAINT: ("The person complained (spam report)", "GDPR art. 21; " + _L34_5),
    SUPPRESSED_ERASURE: ("The person had their data erased", "GDPR art. 17"),
    SUPPRESSED_MANUAL: ("Suppressed by hand by an operator", "GDPR art. 21"),
    SUPPRESSED_BLOCTEL: (
        "Number on Bloctel (phone, before 2026-08-11, no contract in progress)",
        "C. conso L223-1 (version before loi 2025-594)",
    ),
    BLOCTEL_NOT_CHECKED: (
        "No Bloctel scrub at most 30 days old at send time (phone, before 2026-08-11)",
        "C. conso L223-1 (version before loi 2025-594); arrêté du 25 février 2016",
    ),
    CONTACT_UNKNOWN: ("Not in the register: no proof of any basis", "GDPR art. 5(2), 7(1)"),
    RETENTION_EXPIRED: ("The retention deadline has passed", "GDPR art. 5(1)(e); " + _CNIL_REF),
    SOURCE_NO_VALID_CONSENT: (
        "Scraped, public directory, or bought data without proof naming the sender",
        "GDPR art. 7(1), 14; " + _L34_5,
    ),
    PURPOSE_INCOMPATIBLE: ("Data collected for another purpose", "GDPR art. 5(1)(b), 6(4)"),
    SECTOR_BANNED: (
        "Energy renovation / home adaptation canvassing of consumers",
        "C. conso L223-1 (loi 2020-901)",
    ),
    CONSENT_MISSING: ("No consent for this channel and sender", _L34_5 + "; C. conso L223-1"),
    CONSENT_WITHDRAWN: ("Consent withdrawn or objection recorded", "GDPR art. 7(3), 21"),
    CONSENT_INVALID: (
        "Consent pre-ticked, bundled with terms, or not naming the sender / partner",
        "GDPR art. 4(11), 7; " + _L34_5,
    ),
    CONSENT_EXPIRED: ("Phone consent older than its validity", "C. conso L223-1 [unconfirmed]"),
    SOFT_OPT_IN_NOT_ANALOGOUS: ("Client, but the product is not analogous", _L34_5 + " al. 4"),
    SOFT_OPT_IN_NOT_CLIENT: (
        "No purchase from the sending entity collected at a sale (an account is not one)",
        _L34_5 + " al. 4",
    ),
    B2B_UNRELATED_SUBJECT: ("b2b message unrelated to the person's profession", _L34_5),
    PHONE_OUTSIDE_HOURS: ("Outside allowed days/hours, or a public holiday", "C. conso D223-9"),
    PHONE_TOO_FREQUENT: ("More than 4 calls or attempts in 30 days", "C. conso D223-9"),
    BASIS_CONSENT: ("Valid consent for this channel and sender", "GDPR art. 6(1)(a); " + _L34_5),
    BASIS_SOFT_OPT_IN: ("Client, analogous products, never objected", _L34_5 + " al. 4"),
    BASIS_B2B_OPT_OUT: ("Professional subject, no objection", _L34_5 + "; CNIL prospection B2B"),
    BASIS_GENERIC_ADDRESS: ("Role address of a legal person", _L34_5 + "; CNIL prospection B2B"),
    BASIS_OPT_OUT: ("Opt-out channel, informed, no objection", "GDPR art. 6(1)(f), 21"),
    BASIS_CHARITY: ("Non-profit appeal, opt-out", "CNIL prospection (associations)"),
    BASIS_CONTRACT_IN_PROGRESS: (
        "Call about the object of a contract in progress",
        "C. conso L223-1",
    ),
    BASIS_INFORMATIONAL: ("Not prospecting: about a purchase or service", "GDPR art. 6(1)(b)"),
}

BLOCK_CODES: Final = frozenset(code for code in REASONS if not code.startswith("basis."))
ALLOW_CODES: Final = frozenset(code for code in REASONS if code.startswith("basis."))
