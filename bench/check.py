"""Run every benchmark and compare each figure's ratio with its target (PERFORMANCE.md).

    .venv/bin/python bench/check.py [--rows N] [--seconds S] [--only filter,links]

Each benchmark prints, as its last line, a JSON list of figures carrying ``ratio`` and
``target_min`` or ``target_max``; this script collects them, prints one line per figure with
"met" or "MISSED", writes them all to ``var/bench.json`` and exits 1 if any target is missed.
It reads figures, it never times anything itself: the benchmarks measure their own baselines
in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# name -> arguments; "rows"/"seconds" are filled from the command line.
BENCHES: dict[str, list[str]] = {
    "import": ["--rows", "{rows}"],
    "filter": ["--rows", "{rows}"],
    "retention": ["--rows", "{rows}"],
    "tokens": ["--rows", "100000"],
    "links": ["--seconds", "{seconds}"],
    "webhooks": ["--seconds", "{seconds}"],
}


def run(name: str, rows: int, seconds: int) -> list[dict[str, Any]]:
    args = [a.format(rows=rows, seconds=seconds) for a in BENCHES[name]]
    print(f"== {name} {' '.join(args)}", flush=True)
    out = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *args], capture_output=True, text=True, check=False
    )
    sys.stderr.write(out.stderr)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return [{"bench": name, "error": f"exit code {out.returncode}"}]
    figures: list[dict[str, Any]] = json.loads(lines[-1])
    return figures


def verdict(figure: dict[str, Any]) -> bool:
    if "error" in figure:
        return False
    ratio = figure["ratio"]
    if "target_max" in figure and ratio > figure["target_max"]:
        return False
    return not ("target_min" in figure and ratio < figure["target_min"])


def describe(figure: dict[str, Any]) -> str:
    if "error" in figure:
        return f"{figure['bench']:<10} failed: {figure['error']}"
    label = " ".join(str(figure[k]) for k in ("bench", "db") if figure.get(k))
    if "target_max" in figure:
        target = f"<= {figure['target_max']}"
    elif "target_min" in figure:
        target = f">= {figure['target_min']}"
    else:
        return f"{label:<28} ratio {figure['ratio']:>7} (for reference, no target)"
    met = "met" if verdict(figure) else "MISSED"
    return f"{label:<28} ratio {figure['ratio']:>7} (target {target:<8}) {met}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmark names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    figures = [f for name in names for f in run(name, args.rows, args.seconds)]
    print()
    for figure in figures:
        print(describe(figure))
    var = HERE.parent / "var"
    var.mkdir(exist_ok=True)
    (var / "bench.json").write_text(json.dumps(figures, indent=1))
    missed = [f for f in figures if not verdict(f)]
    print(f"\n{len(figures) - len(missed)} of {len(figures)} figures meet their targets (var/bench.json)")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
