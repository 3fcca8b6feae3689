"""Minting signed links for a campaign, against itsdangerous ``dumps`` in the same run.

For each of N recipients a campaign mints an unsubscribe link, a preferences link and a tracked
click link. The baseline (SIGN in PERFORMANCE.md) is ``URLSafeTimedSerializer.dumps`` of the same
payloads; the target is >= 3x its rate. A sample of our tokens is loaded back with plain
itsdangerous to show the wire format is the same.

    .venv/bin/python bench/tokens.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from itsdangerous import URLSafeTimedSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatekeeper.links.tokens import PURPOSES, LinkSigner, utc_clock

SECRET = "bench-secret-not-for-production"  # noqa: S105 - a benchmark's throwaway key
URL = "https://shop.example/offre-de-printemps?utm_campaign=printemps"
SENT = 1_795_000_000
CAMPAIGN = 4242


def ours(rows: int) -> tuple[float, list[str]]:
    signer = LinkSigner([SECRET], "https://gk.example", utc_clock)
    sample: list[str] = []
    start = time.perf_counter()
    for cid in range(rows):
        u = signer.unsubscribe(cid, CAMPAIGN)
        signer.preferences(cid, CAMPAIGN)
        signer.tracked("click", cid, CAMPAIGN, URL, SENT)
        if cid < 3:
            sample.append(u)
    return 3 * rows / (time.perf_counter() - start), sample


def baseline(rows: int) -> float:
    serializers = {n: URLSafeTimedSerializer(SECRET, salt=p.salt) for n, p in PURPOSES.items()}
    unsub, prefs, click = (
        serializers["unsubscribe"],
        serializers["preferences"],
        serializers["click"],
    )
    start = time.perf_counter()
    for cid in range(rows):
        unsub.dumps({"a": "u", "c": cid, "m": CAMPAIGN, "ch": "email"})
        prefs.dumps({"a": "p", "c": cid, "m": CAMPAIGN})
        click.dumps({"a": "c", "c": cid, "m": CAMPAIGN, "s": SENT, "u": URL})
    return 3 * rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="recipients (3 links each)")
    rows = parser.parse_args().rows
    base = baseline(rows)
    rate, sample = ours(rows)
    loader = URLSafeTimedSerializer(SECRET, salt=PURPOSES["unsubscribe"].salt)
    for token in sample:  # the same wire format: plain itsdangerous reads ours
        loader.loads(token, max_age=PURPOSES["unsubscribe"].max_age)
    ratio = rate / base
    print(f"  itsdangerous dumps {base:>12,.0f} tokens/s")
    print(f"  gatekeeper mint    {rate:>12,.0f} tokens/s   ratio {ratio:.2f} (target >= 3)")
    print(
        json.dumps(
            [
                {
                    "bench": "tokens.mint",
                    "rows": rows,
                    "value": round(rate, 1),
                    "unit": "tokens/s",
                    "baseline": "SIGN",
                    "baseline_value": round(base, 1),
                    "ratio": round(ratio, 3),
                    "target_min": 3.0,
                }
            ]
        )
    )


if __name__ == "__main__":
    main()
