"""The README lists every reason code the core can give (they are a public contract)."""

from __future__ import annotations

from pathlib import Path

from gatekeeper.domain import REASONS


def test_the_readme_lists_every_reason_code_with_its_source() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, (_meaning, source) in REASONS.items():
        assert f"| `{code}` |" in readme, code
        assert source in readme
