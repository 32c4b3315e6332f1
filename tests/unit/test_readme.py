"""The README's contract section is the contract in code (one definition, used by the docs)."""

from pathlib import Path

from core.contract import markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n\n", 3)[:3]
    text = "\n".join(head)
    assert "make demo" in text and "make test" in text


def test_readme_contract_matches_code():
    assert markdown().strip() in README.read_text()
