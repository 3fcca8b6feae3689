"""The gate, end to end through the pure pipeline: RULES.md §2 table and §3 order.

Each case: contact facts (None = not in the register), campaign, situation options, and the
exact reasons expected (an allow has one "basis.*" reason). Dates sit on both sides of every
boundary. Default campaign: e-mail from ACME SAS about coffee_machines, Tue 2026-11-24 11:00.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
from domain_builders import (
    ACME,
    at,
    campaign,
    consent,
    contact,
    contract,
    objection,
    policy,
    purchase,
    run,
    suppression,
)

from gatekeeper.domain import REASONS, ContactFacts, decide, situation_for, summarise
from gatekeeper.domain.facts import Campaign

P = pytest.param
NO: dict[str, Any] = {}
FRESH = {"bloctel_checked": "2026-06-10"}  # a scrub 6 days before the 2026-06-16 calls
OLD = "2026-06-16T11:00"  # a Tuesday before L223-1 (new) enters into force
PHONE = campaign("phone")
EMAIL = campaign("email")
B2B = {"audience": "b2b", "profession_tags": frozenset({"purchasing"})}

TABLE = [
    # --- b2c e-mail / SMS: opt-in, soft opt-in, charity opt-out (CPCE L34-5) ---
    P(
        contact(consents=(consent(),)),
        EMAIL,
        NO,
        ("basis.consent",),
        id="b2c email consent given -> allow basis.consent",
    ),
    P(contact(), EMAIL, NO, ("consent.missing",), id="b2c email no consent -> consent.missing"),
    P(
        contact(consents=(consent(prechecked=True),)),
        EMAIL,
        NO,
        ("consent.invalid",),
        id="b2c email pre-ticked consent -> consent.invalid",
    ),
    P(
        contact(consents=(consent(bundled_with_terms=True),)),
        EMAIL,
        NO,
        ("consent.invalid",),
        id="b2c email consent bundled with terms -> consent.invalid",
    ),
    P(
        contact(consents=(consent(sender="Other SA"),)),
        EMAIL,
        NO,
        ("consent.invalid",),
        id="b2c email consent naming another sender -> consent.invalid",
    ),
    P(
        contact(consents=(consent(),)),
        campaign(partner="Partner SARL"),
        NO,
        ("consent.invalid",),
        id="b2c email partner campaign, consent not naming the partner -> consent.invalid",
    ),
    P(
        contact(consents=(consent(partners=("Partner SARL",)),)),
        campaign(partner="Partner SARL"),
        NO,
        ("basis.consent",),
        id="b2c email partner campaign, partner named -> basis.consent",
    ),
    P(
        contact(consents=(consent(sender="Broker", partners=(ACME,)),)),
        EMAIL,
        NO,
        ("basis.consent",),
        id="b2c email consent naming sender as a partner -> basis.consent",
    ),
    P(
        contact(consents=(consent(), consent(when="2026-02-01", given=False))),
        EMAIL,
        NO,
        ("consent.withdrawn",),
        id="b2c email consent then refusal -> consent.withdrawn",
    ),
    P(
        contact(consents=(consent(),), objections=(objection(),)),
        EMAIL,
        NO,
        ("consent.withdrawn",),
        id="b2c email objection after consent -> consent.withdrawn",
    ),
    P(
        contact(consents=(consent(when="2026-04-01"),), objections=(objection(),)),
        EMAIL,
        NO,
        ("basis.consent",),
        id="b2c email newer explicit consent lifts objection -> basis.consent",
    ),
    P(
        contact(consents=(consent(when="2026-04-01", prechecked=True),), objections=(objection(),)),
        EMAIL,
        NO,
        ("consent.withdrawn",),
        id="b2c email newer pre-ticked consent does not lift objection -> consent.withdrawn",
    ),
    P(
        contact(objections=(objection(channels=("sms",)),), consents=(consent(),)),
        EMAIL,
        NO,
        ("basis.consent",),
        id="b2c email objection on sms only -> basis.consent",
    ),
    P(
        contact(purchases=(purchase(),)),
        EMAIL,
        NO,
        ("basis.soft_opt_in",),
        id="b2c email client, analogous product -> basis.soft_opt_in",
    ),
    P(
        contact(purchases=(purchase(),)),
        campaign(product_category="tea_bags"),
        NO,
        ("soft_opt_in.not_analogous",),
        id="b2c email client, other family -> not_analogous",
    ),
    P(
        contact(purchases=(purchase(),)),
        campaign(product_category=None),
        NO,
        ("soft_opt_in.not_analogous",),
        id="b2c email client, no product named -> not_analogous",
    ),
    P(
        contact(purchases=(purchase(seller="Other SA"),)),
        EMAIL,
        NO,
        ("soft_opt_in.not_client",),
        id="b2c email purchase from another entity -> soft_opt_in.not_client",
    ),
    P(
        contact(accounts_created=(at("2026-01-10"),)),
        EMAIL,
        NO,
        ("soft_opt_in.not_client",),
        id="b2c email account created, no purchase -> soft_opt_in.not_client",
    ),
    P(
        contact(purchases=(purchase(),), collected_by="Other SA"),
        EMAIL,
        NO,
        ("soft_opt_in.not_client",),
        id="b2c email data collected by another entity -> not_client",
    ),
    P(
        contact(purchases=(purchase(),), objections=(objection(),)),
        EMAIL,
        NO,
        ("consent.withdrawn",),
        id="b2c email client who objected -> consent.withdrawn",
    ),
    P(
        contact(purchases=(purchase(),), objections=(objection(),)),
        campaign(),
        {"suppressions": (suppression("unsubscribe"),)},
        ("suppressed.unsubscribe", "consent.withdrawn"),
        id="b2c email unsubscribed client, new purchase does not lift -> suppressed.unsubscribe",
    ),
    P(
        contact(purchases=(purchase(),), consents=(consent(prechecked=True),)),
        EMAIL,
        NO,
        ("basis.soft_opt_in",),
        id="b2c email client with flawed consent -> soft opt-in",
    ),
    P(
        contact(),
        campaign(purpose="charity", sender_nonprofit=True),
        NO,
        ("basis.charity",),
        id="b2c email charity from a non-profit -> basis.charity",
    ),
    P(
        contact(objections=(objection(),)),
        campaign(purpose="charity", sender_nonprofit=True),
        NO,
        ("consent.withdrawn",),
        id="b2c email charity after objection -> consent.withdrawn",
    ),
    P(
        contact(),
        campaign(purpose="charity"),
        NO,
        ("consent.missing",),
        id="b2c email charity from a for-profit sender -> consent.missing",
    ),
    P(
        contact(consents=(consent("sms"),)),
        campaign("sms"),
        NO,
        ("basis.consent",),
        id="b2c sms consent -> basis.consent",
    ),
    P(
        contact(consents=(consent("email"),)),
        campaign("sms"),
        NO,
        ("consent.missing",),
        id="b2c sms with an e-mail consent only -> consent.missing",
    ),
    P(
        contact(purchases=(purchase(),)),
        campaign("sms"),
        NO,
        ("basis.soft_opt_in",),
        id="b2c sms client analogous -> basis.soft_opt_in",
    ),
    P(
        contact(),
        campaign("sms", purpose="charity", sender_nonprofit=True),
        NO,
        ("basis.charity",),
        id="b2c sms charity -> basis.charity",
    ),
    # --- b2c automated calls, fax: opt-in, no client exception ---
    P(
        contact(consents=(consent("automated_call"),)),
        campaign("automated_call"),
        NO,
        ("basis.consent",),
        id="b2c automated_call consent -> basis.consent",
    ),
    P(
        contact(purchases=(purchase(),)),
        campaign("automated_call"),
        NO,
        ("consent.missing",),
        id="b2c automated_call client without consent -> consent.missing (no soft opt-in)",
    ),
    P(
        contact(),
        campaign("automated_call", purpose="charity", sender_nonprofit=True),
        NO,
        ("basis.charity",),
        id="b2c automated_call charity -> basis.charity",
    ),
    P(
        contact(),
        campaign(
            "automated_call", send_at="2026-11-24T20:00", purpose="charity", sender_nonprofit=True
        ),
        NO,
        ("phone.outside_hours",),
        id="b2c automated_call at 20:00 -> phone.outside_hours",
    ),
    P(
        contact(consents=(consent("fax"),)),
        campaign("fax"),
        NO,
        ("basis.consent",),
        id="b2c fax consent -> basis.consent",
    ),
    P(
        contact(purchases=(purchase(),)),
        campaign("fax"),
        NO,
        ("consent.missing",),
        id="b2c fax client without consent -> consent.missing",
    ),
    P(
        contact(),
        campaign("fax", purpose="charity", sender_nonprofit=True),
        NO,
        ("consent.missing",),
        id="b2c fax charity -> consent.missing",
    ),
    # --- b2c phone from 2026-08-11: opt-in, contract exception (C. conso L223-1) ---
    P(
        contact(consents=(consent("phone", "2026-09-01"),)),
        PHONE,
        NO,
        ("basis.consent",),
        id="b2c phone after 2026-08-11 consent -> basis.consent",
    ),
    P(
        contact(),
        PHONE,
        NO,
        ("consent.missing",),
        id="b2c phone after 2026-08-11 no consent -> consent.missing",
    ),
    P(
        contact(contracts=(contract("coffee_capsules"),)),
        PHONE,
        NO,
        ("basis.contract_in_progress",),
        id="b2c phone contract in progress about its object -> basis.contract_in_progress",
    ),
    P(
        contact(contracts=(contract("mobile_plans"),)),
        PHONE,
        NO,
        ("consent.missing",),
        id="b2c phone contract in progress about something else -> consent.missing",
    ),
    P(
        contact(contracts=(contract(end="2026-10-01"),)),
        PHONE,
        NO,
        ("consent.missing",),
        id="b2c phone contract ended -> consent.missing",
    ),
    P(
        contact(contracts=(contract(),), objections=(objection(channels=("phone",)),)),
        PHONE,
        NO,
        ("consent.withdrawn",),
        id="b2c phone contract but objected -> consent.withdrawn",
    ),
    P(
        contact(consents=(consent("phone", "2025-11-25T11:00"),)),
        PHONE,
        NO,
        ("basis.consent",),
        id="b2c phone consent 364 days old -> basis.consent",
    ),
    P(
        contact(consents=(consent("phone", "2025-11-23T11:00"),)),
        PHONE,
        NO,
        ("consent.expired",),
        id="b2c phone consent 366 days old -> consent.expired",
    ),
    P(
        contact(),
        campaign("phone", "2026-08-10T11:00"),
        FRESH | {"bloctel_checked": "2026-08-01"},
        ("basis.opt_out",),
        id="b2c phone 2026-08-10 no consent, Bloctel clear -> basis.opt_out",
    ),
    P(
        contact(),
        campaign("phone", "2026-08-11T11:00"),
        {"bloctel_checked": "2026-08-01"},
        ("consent.missing",),
        id="b2c phone 2026-08-11 no consent -> consent.missing",
    ),
    # --- b2c phone before 2026-08-11: opt-out + Bloctel ---
    P(
        contact(),
        campaign("phone", OLD),
        FRESH,
        ("basis.opt_out",),
        id="b2c phone before 2026-08-11, not on Bloctel -> basis.opt_out",
    ),
    P(
        contact(),
        campaign("phone", OLD),
        FRESH | {"suppressions": (suppression("bloctel", "2026-06-10", ("phone",)),)},
        ("suppressed.bloctel",),
        id="b2c phone before 2026-08-11 on Bloctel -> suppressed.bloctel",
    ),
    P(
        contact(contracts=(contract("mobile_plans"),)),
        campaign("phone", OLD),
        FRESH | {"suppressions": (suppression("bloctel", "2026-06-10", ("phone",)),)},
        ("basis.contract_in_progress",),
        id="b2c phone before 2026-08-11 on Bloctel with a contract -> contract_in_progress",
    ),
    P(
        contact(),
        campaign("phone", OLD),
        {"bloctel_checked": "2026-05-17T11:00"},
        ("basis.opt_out",),
        id="b2c phone Bloctel scrub 30 days old -> basis.opt_out",
    ),
    P(
        contact(),
        campaign("phone", OLD),
        {"bloctel_checked": "2026-05-16T11:00"},
        ("bloctel.not_checked",),
        id="b2c phone Bloctel scrub 31 days old -> bloctel.not_checked",
    ),
    P(
        contact(),
        campaign("phone", OLD),
        NO,
        ("bloctel.not_checked",),
        id="b2c phone before 2026-08-11 never scrubbed -> bloctel.not_checked",
    ),
    P(
        contact(objections=(objection(channels=("phone",)),)),
        campaign("phone", OLD),
        FRESH,
        ("consent.withdrawn",),
        id="b2c phone before 2026-08-11 objected -> withdrawn",
    ),
    # --- b2c postal: opt-out ---
    P(contact(), campaign("postal"), NO, ("basis.opt_out",), id="b2c postal -> basis.opt_out"),
    P(
        contact(objections=(objection(channels=("postal",)),)),
        campaign("postal"),
        NO,
        ("consent.withdrawn",),
        id="b2c postal objected -> consent.withdrawn",
    ),
    P(
        contact(),
        campaign("postal", purpose="charity", sender_nonprofit=True),
        NO,
        ("basis.charity",),
        id="b2c postal charity -> basis.charity",
    ),
    # --- b2b ---
    P(
        contact(**B2B),
        campaign(topic_tags={"purchasing"}),
        NO,
        ("basis.b2b_opt_out",),
        id="b2b email subject meets profession tags -> basis.b2b_opt_out",
    ),
    P(
        contact(**B2B),
        campaign(topic_tags={"cooking"}),
        NO,
        ("b2b.unrelated_subject",),
        id="b2b email unrelated subject -> b2b.unrelated_subject",
    ),
    P(
        contact(**B2B),
        campaign(topic_tags={"cooking"}, professional_relevance=True),
        NO,
        ("b2b.unrelated_subject",),
        id="b2b email tags decide over the attestation",
    ),
    P(
        contact(audience="b2b"),
        campaign(professional_relevance=True),
        NO,
        ("basis.b2b_opt_out",),
        id="b2b email no tags, attested relevant -> basis.b2b_opt_out",
    ),
    P(
        contact(audience="b2b"),
        EMAIL,
        NO,
        ("b2b.unrelated_subject",),
        id="b2b email no tags, not attested -> b2b.unrelated_subject",
    ),
    P(
        contact(consents=(consent(),), **B2B),
        campaign(topic_tags={"cooking"}),
        NO,
        ("basis.consent",),
        id="b2b email unrelated subject with consent -> basis.consent",
    ),
    P(
        contact(consents=(consent(prechecked=True),), **B2B),
        campaign(topic_tags={"cooking"}),
        NO,
        ("consent.invalid",),
        id="b2b email unrelated subject, pre-ticked -> consent.invalid",
    ),
    P(
        contact(objections=(objection(),), **B2B),
        campaign(topic_tags={"purchasing"}),
        NO,
        ("consent.withdrawn",),
        id="b2b email related but objected -> consent.withdrawn",
    ),
    P(
        contact(**B2B),
        campaign(topic_tags={"purchasing"}),
        {"personal_domain": True},
        ("consent.missing",),
        id="b2b flagged contact at gmail.com is treated as b2c",
    ),
    P(
        contact(b2b_confirmed=True, **B2B),
        campaign(topic_tags={"purchasing"}),
        {"personal_domain": True},
        ("basis.b2b_opt_out",),
        id="b2b at a personal domain with explicit flag -> basis.b2b_opt_out",
    ),
    P(
        contact(**B2B),
        campaign("sms", topic_tags={"purchasing"}),
        NO,
        ("basis.b2b_opt_out",),
        id="b2b sms related -> basis.b2b_opt_out",
    ),
    P(
        contact(**B2B),
        campaign("automated_call", "2026-11-28T21:00", topic_tags={"purchasing"}),
        NO,
        ("basis.b2b_opt_out",),
        id="b2b automated_call related, Saturday night -> allowed",
    ),
    P(
        contact(**B2B),
        campaign("fax", topic_tags={"purchasing"}),
        NO,
        ("consent.missing",),
        id="b2b fax natural person without consent -> consent.missing",
    ),
    P(
        contact(consents=(consent("fax"),), **B2B),
        campaign("fax"),
        NO,
        ("basis.consent",),
        id="b2b fax with consent -> basis.consent",
    ),
    P(
        None,
        campaign("fax"),
        {"generic": True},
        ("basis.generic_address",),
        id="b2b fax generic address -> basis.generic_address",
    ),
    P(
        contact(**B2B),
        campaign("phone", "2026-11-28T21:00"),
        NO,
        ("basis.opt_out",),
        id="b2b phone Saturday 21:00 -> basis.opt_out (D223-9 consumers only)",
    ),
    P(
        contact(objections=(objection(channels=("phone",)),), **B2B),
        PHONE,
        NO,
        ("consent.withdrawn",),
        id="b2b phone objected -> consent.withdrawn",
    ),
    P(contact(**B2B), campaign("postal"), NO, ("basis.opt_out",), id="b2b postal -> opt_out"),
    P(
        contact(**B2B),
        campaign("phone", OLD),
        {"suppressions": (suppression("bloctel", "2026-06-10", ("phone",)),)},
        ("basis.opt_out",),
        id="b2b phone before 2026-08-11 on Bloctel -> basis.opt_out (consumers only)",
    ),
    # --- generic addresses ---
    P(
        None,
        EMAIL,
        {"generic": True},
        ("basis.generic_address",),
        id="generic address unknown to the register -> basis.generic_address",
    ),
    P(
        contact(audience="b2b", collected_at=at("2020-01-01")),
        EMAIL,
        {"generic": True},
        ("basis.generic_address",),
        id="generic address with an expired clock -> allowed",
    ),
    P(
        None,
        EMAIL,
        {"generic": True, "suppressions": (suppression("unsubscribe"),)},
        ("suppressed.unsubscribe",),
        id="generic address suppressed -> suppressed.unsubscribe",
    ),
    # --- informational purpose ---
    P(
        contact(),
        campaign(purpose="informational"),
        NO,
        ("basis.informational",),
        id="informational, no consent -> basis.informational",
    ),
    P(
        contact(),
        campaign(purpose="informational"),
        {"suppressions": (suppression("unsubscribe"),)},
        ("basis.informational",),
        id="informational to an unsubscribed address -> basis.informational",
    ),
    P(
        contact(),
        campaign(purpose="informational"),
        {"suppressions": (suppression("hard_bounce"),)},
        ("suppressed.hard_bounce",),
        id="informational to a hard-bounced address -> suppressed.hard_bounce",
    ),
    P(
        contact(),
        campaign(purpose="informational"),
        {"suppressions": (suppression("complaint"),)},
        ("suppressed.complaint",),
        id="informational to a complainer -> suppressed.complaint",
    ),
    P(
        None,
        campaign(purpose="informational"),
        NO,
        ("basis.informational",),
        id="informational to an unknown contact -> basis.informational",
    ),
    P(
        contact(collected_at=at("2020-01-01")),
        campaign(purpose="informational"),
        NO,
        ("retention.expired",),
        id="informational past the retention deadline -> expired",
    ),
    P(
        contact(),
        campaign("phone", "2026-11-28T21:00", purpose="informational"),
        NO,
        ("basis.informational",),
        id="informational call on Saturday -> not canvassing",
    ),
    P(
        contact(source_type="scraped"),
        campaign(purpose="informational"),
        NO,
        ("basis.informational",),
        id="informational ignores the source rule",
    ),
]

STEPS = [
    # --- step 1: address ---
    P(
        contact(consents=(consent(),)),
        EMAIL,
        {"address_valid": False},
        ("address.invalid",),
        id="step 1 invalid address -> address.invalid",
    ),
    # --- step 2: suppression ---
    *[
        P(
            contact(consents=(consent(),)),
            EMAIL,
            {"suppressions": (suppression(reason),)},
            (f"suppressed.{reason}",),
            id=f"step 2 {reason} -> suppressed.{reason}",
        )
        for reason in ("unsubscribe", "hard_bounce", "complaint", "erasure", "manual")
    ],
    P(
        contact(consents=(consent(),)),
        EMAIL,
        {"suppressions": (suppression("manual", channels=("postal",)),)},
        ("basis.consent",),
        id="step 2 suppression on another channel",
    ),
    P(
        contact(consents=(consent(),)),
        EMAIL,
        {
            "suppressions": (
                suppression(
                    "manual", channels=("email", "sms", "automated_call", "fax", "phone", "postal")
                ),
            )
        },
        ("suppressed.manual",),
        id="step 2 suppression on all channels",
    ),
    P(
        contact(consents=(consent(when="2026-05-01"),)),
        EMAIL,
        {"suppressions": (suppression("unsubscribe", "2026-04-01"),)},
        ("basis.consent",),
        id="step 2 newer explicit consent lifts an unsubscribe",
    ),
    P(
        contact(consents=(consent(when="2026-03-01"),)),
        EMAIL,
        {"suppressions": (suppression("unsubscribe", "2026-04-01"),)},
        ("suppressed.unsubscribe",),
        id="step 2 older consent does not lift an unsubscribe",
    ),
    P(
        contact(consents=(consent(when="2026-05-01"),)),
        EMAIL,
        {"suppressions": (suppression("complaint", "2026-04-01"),)},
        ("suppressed.complaint",),
        id="step 2 newer consent does not lift a complaint",
    ),
    P(
        contact(consents=(consent(),)),
        EMAIL,
        {"as_of": "2026-11-01", "suppressions": (suppression("unsubscribe", "2026-11-10"),)},
        ("basis.consent",),
        id="step 2 suppression recorded after as_of is not yet known",
    ),
    P(
        contact(),
        EMAIL,
        {"suppressions": (suppression("erasure"), suppression("unsubscribe"))},
        ("suppressed.erasure", "suppressed.unsubscribe", "consent.missing"),
        id="step 2 several suppressions: all reasons carried, erasure first",
    ),
    # --- step 3: unknown contact ---
    P(None, EMAIL, NO, ("contact.unknown",), id="step 3 unknown b2c e-mail -> contact.unknown"),
    P(
        None,
        campaign("postal"),
        NO,
        ("contact.unknown",),
        id="step 3 unknown postal, default policy -> contact.unknown",
    ),
    P(
        None,
        campaign("phone"),
        NO,
        ("contact.unknown",),
        id="step 3 unknown phone -> contact.unknown",
    ),
    # --- step 4: retention (prospect collected 2023-11-24 00:00 Paris -> deadline 2026-11-24) ---
    P(
        contact(collected_at=at("2023-11-24"), consents=(consent(when="2023-11-24"),)),
        campaign(send_at="2026-11-23T11:00"),
        NO,
        ("basis.consent",),
        id="step 4 the day before the deadline -> allowed",
    ),
    P(
        contact(collected_at=at("2023-11-24"), consents=(consent(when="2023-11-24"),)),
        campaign(send_at="2026-11-24T00:00"),
        NO,
        ("retention.expired",),
        id="step 4 on the deadline -> retention.expired",
    ),
    P(
        contact(collected_at=at("2023-11-24"), consents=(consent(when="2023-11-24"),)),
        campaign(send_at="2026-11-24T11:00"),
        {"as_of": "2026-11-20"},
        ("retention.expired",),
        id="step 4 decided before the deadline, sent after -> retention.expired",
    ),
    P(
        contact(anonymised=True, consents=(consent(),)),
        EMAIL,
        NO,
        ("retention.expired",),
        id="step 4 anonymised contact -> retention.expired",
    ),
    P(
        contact(
            consents=(
                consent(),
                consent(when="2026-02-01", method="reconsent", given=False, channel="postal"),
            )
        ),
        EMAIL,
        NO,
        ("retention.expired",),
        id="step 4 reconsent refused -> retention.expired at once",
    ),
    # --- step 5: source ---
    P(
        contact(source_type="scraped", consents=(consent(),)),
        EMAIL,
        NO,
        ("source.no_valid_consent",),
        id="step 5 scraped data on e-mail -> source.no_valid_consent",
    ),
    P(
        contact(source_type="public_directory"),
        campaign("postal"),
        NO,
        ("basis.opt_out",),
        id="step 5 public directory on postal (opt-out) -> basis.opt_out",
    ),
    P(
        contact(source_type="public_directory"),
        campaign("sms"),
        NO,
        ("source.no_valid_consent", "consent.missing"),
        id="step 5 public directory on sms",
    ),
    P(
        contact(source_type="broker"),
        EMAIL,
        NO,
        ("source.no_valid_consent", "consent.missing"),
        id="step 5 bought list without proof -> source.no_valid_consent",
    ),
    P(
        contact(
            source_type="broker",
            source_proof_names_sender=True,
            consents=(consent(sender="Broker", partners=(ACME,)),),
        ),
        EMAIL,
        NO,
        ("basis.consent",),
        id="step 5 bought list with proof naming the sender -> basis.consent",
    ),
    P(
        contact(source_type="partner", consents=(consent(sender="Partner SARL"),)),
        EMAIL,
        NO,
        ("source.no_valid_consent", "consent.invalid"),
        id="step 5 partner data, consent naming only the partner -> source.no_valid_consent",
    ),
    P(
        contact(source_type="scraped", **B2B),
        campaign(topic_tags={"purchasing"}),
        NO,
        ("basis.b2b_opt_out",),
        id="step 5 scraped b2b, related subject (opt-out row) -> allowed",
    ),
    # --- step 6: purpose ---
    P(
        contact(purpose="recruitment"),
        campaign("postal"),
        NO,
        ("purpose.incompatible",),
        id="step 6 recruitment data for postal prospecting -> purpose.incompatible",
    ),
    P(
        contact(purpose="customer_service", purchases=(purchase(),)),
        EMAIL,
        NO,
        ("purpose.incompatible",),
        id="step 6 support data, client -> purpose.incompatible",
    ),
    P(
        contact(purpose="recruitment", consents=(consent(),)),
        EMAIL,
        NO,
        ("basis.consent",),
        id="step 6 recruitment data but a channel consent -> basis.consent (GDPR 6(4))",
    ),
    # --- step 7: sector ---
    P(
        contact(consents=(consent("phone", "2026-09-01"),)),
        campaign("phone", sector="energy_renovation"),
        NO,
        ("sector.banned",),
        id="step 7 energy renovation call to a consenting consumer -> sector.banned",
    ),
    P(
        contact(consents=(consent(),)),
        campaign(sector="home_adaptation"),
        NO,
        ("sector.banned",),
        id="step 7 home adaptation e-mail, no contract -> sector.banned",
    ),
    P(
        contact(consents=(consent(),), contracts=(contract("electricity_supply"),)),
        campaign(sector="energy_renovation", product_category="energy_services"),
        NO,
        ("basis.consent",),
        id="step 7 energy e-mail within a contract in progress -> allowed",
    ),
    P(
        contact(),
        campaign("postal", sector="energy_renovation"),
        NO,
        ("basis.opt_out",),
        id="step 7 energy renovation by post -> basis.opt_out",
    ),
    P(
        contact(**B2B),
        campaign("phone", sector="energy_renovation"),
        NO,
        ("basis.opt_out",),
        id="step 7 energy renovation call to b2b -> basis.opt_out",
    ),
    # --- step 9: D223-9 hours, holidays, frequency ---
    *[
        P(
            contact(consents=(consent("phone", "2026-09-01"),)),
            campaign("phone", when),
            NO,
            expected,
            id=f"step 9 call {label}",
        )
        for when, label, expected in [
            ("2026-11-24T09:59", "at 09:59 -> outside_hours", ("phone.outside_hours",)),
            ("2026-11-24T10:00", "at 10:00 -> allowed", ("basis.consent",)),
            ("2026-11-24T12:59", "at 12:59 -> allowed", ("basis.consent",)),
            ("2026-11-24T13:00", "at 13:00 -> outside_hours", ("phone.outside_hours",)),
            ("2026-11-24T13:59", "at 13:59 -> outside_hours", ("phone.outside_hours",)),
            ("2026-11-24T14:00", "at 14:00 -> allowed", ("basis.consent",)),
            ("2026-11-24T19:59", "at 19:59 -> allowed", ("basis.consent",)),
            ("2026-11-24T20:00", "at 20:00 -> outside_hours", ("phone.outside_hours",)),
            ("2026-11-28T11:00", "on a Saturday -> outside_hours", ("phone.outside_hours",)),
            (
                "2026-11-11T11:00",
                "on 11 November (holiday) -> outside_hours",
                ("phone.outside_hours",),
            ),
            ("2026-11-10T11:00", "on 10 November (working day) -> allowed", ("basis.consent",)),
        ]
    ],
    P(
        contact(consents=(consent("phone", "2026-09-01"),), timezone="America/Martinique"),
        campaign("phone", "2026-11-24T17:00"),
        NO,
        ("basis.consent",),
        id="step 9 17:00 Paris is 12:00 in Martinique -> allowed",
    ),
    P(
        contact(consents=(consent("phone", "2026-09-01"),), timezone="America/Martinique"),
        campaign("phone", "2026-11-24T11:00"),
        NO,
        ("phone.outside_hours",),
        id="step 9 11:00 Paris is 06:00 in Martinique -> outside_hours",
    ),
    P(
        contact(consents=(consent("phone", "2026-09-01"),)),
        PHONE,
        {"attempts": ("2026-11-02", "2026-11-10", "2026-11-17")},
        ("basis.consent",),
        id="step 9 4th call in 30 days -> allowed",
    ),
    P(
        contact(consents=(consent("phone", "2026-09-01"),)),
        PHONE,
        {"attempts": ("2026-11-02", "2026-11-10", "2026-11-17", "2026-11-20")},
        ("phone.too_frequent",),
        id="step 9 5th call in 30 days -> phone.too_frequent",
    ),
    P(
        contact(consents=(consent("phone", "2026-09-01"),)),
        PHONE,
        {"attempts": ("2026-10-24T10:00", "2026-11-10", "2026-11-17", "2026-11-20")},
        ("basis.consent",),
        id="step 9 an attempt 31 days old does not count",
    ),
    P(
        contact(),
        campaign("phone", "2026-11-24T20:00"),
        NO,
        ("consent.missing", "phone.outside_hours"),
        id="all reasons carried: no consent and 20:00 -> consent.missing first",
    ),
]


@pytest.mark.parametrize(("facts", "camp", "opts", "expected"), TABLE + STEPS)
def test_gate(
    facts: ContactFacts | None, camp: Campaign, opts: dict[str, Any], expected: tuple[str, ...]
) -> None:
    verdict = run(facts, camp, **opts)
    assert verdict.reasons == expected
    allowed = expected[0].startswith("basis.")
    assert verdict.decision == ("allow" if allowed else "block")
    assert verdict.basis == (expected[0].removeprefix("basis.") if allowed else None)
    assert (verdict.policy_id, verdict.policy_version) == ("fr-2026", "2026.11.1")


def test_every_reason_code_has_a_named_case() -> None:
    seen = {code for case in TABLE + STEPS for code in cast(tuple[str, ...], case.values[3])}
    assert seen >= set(REASONS), sorted(set(REASONS) - seen)
    assert seen <= set(REASONS), sorted(seen - set(REASONS))


ALLOW_UNKNOWN = dataclasses.replace(policy(), allow_unknown_b2b_postal=True)


@pytest.mark.parametrize(
    ("camp", "opts", "expected"),
    [
        P(campaign("postal"), NO, ("basis.opt_out",), id="unknown postal -> basis.opt_out"),
        P(
            campaign(professional_relevance=True),
            NO,
            ("basis.b2b_opt_out",),
            id="unknown business-domain e-mail, relevant -> basis.b2b_opt_out",
        ),
        P(
            EMAIL,
            NO,
            ("b2b.unrelated_subject",),
            id="unknown business-domain e-mail, unrelated -> b2b.unrelated_subject",
        ),
        P(
            campaign(professional_relevance=True),
            {"personal_domain": True},
            ("contact.unknown",),
            id="unknown gmail.com address stays blocked -> contact.unknown",
        ),
        P(campaign("sms"), NO, ("contact.unknown",), id="unknown sms stays blocked"),
    ],
)
def test_unknown_contacts_when_the_policy_allows_b2b_and_postal(
    camp: Campaign, opts: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert run(None, camp, pol=ALLOW_UNKNOWN, **opts).reasons == expected


def test_situation_and_decide_are_hashable_and_memoisable() -> None:
    pol = policy()
    one = summarise(contact(consents=(consent(when="2026-01-10"),)), pol)
    two = summarise(
        contact(consents=(consent(when="2026-02-11"),), collected_at=at("2025-09-01")), pol
    )
    assert one.profile == two.profile and hash(one.profile) == hash(two.profile)
    assert one.instants != two.instants
    situations = {
        situation_for(
            s,
            as_of=EMAIL.send_at,
            campaign=EMAIL,
            address_valid=True,
            generic_address=False,
            policy=pol,
        )
        for s in (one, two)
    }
    assert len(situations) == 1
    memo = {s: decide(EMAIL, s, pol) for s in situations}
    assert next(iter(memo.values())).basis == "consent"
