"""The rule catalogue: complete, the one source of severities, and the docs generated from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.cli import main
from agent.rules import RULES, catalogue_markdown, severity_of

ROOT = Path(__file__).resolve().parents[1]

# the product spec's table "Finding rules (stable ids)", and the README's extra rule
SPEC_RULES = (
    "DEV-UNMANAGED", "DEV-NONCOMPLIANT", "DEV-NOT-ENCRYPTED", "DEV-NO-RECOVERY-KEY", "DEV-STALE",
    "POL-REMOVABLE-MEDIA", "PIM-GA-COUNT", "PIM-PERMANENT-ACTIVE", "PIM-NO-END-DATE",
    "PIM-UNAPPROVED", "PIM-REGISTER-EXPIRED", "PIM-GUEST-ADMIN", "PIM-ADMIN-NO-MFA",
    "OFF-REENABLED", "OFF-LIMIT-REACHED", "OFF-MANUAL-TASK", "OFF-VETOED",
    "OFF-PRIVILEGED-LEAVER",
)
RULE_LITERAL = re.compile(r"""["']((?:DEV|POL|PIM|OFF|SEC)-[A-Z0-9-]+)["']""")


def test_every_spec_rule_is_in_the_catalogue_with_its_job_and_texts() -> None:
    from jobs import REGISTRY

    assert set(SPEC_RULES) <= set(RULES)
    for rule in RULES.values():
        assert rule.job in REGISTRY, rule.id
        assert rule.severity in ("high", "medium", "low", "info")
        assert rule.title.strip() and rule.remedy.strip(), rule.id
    assert severity_of("DEV-UNMANAGED") == "high"
    with pytest.raises(KeyError):
        severity_of("DEV-NO-SUCH-RULE")


def test_every_rule_a_job_can_raise_is_in_the_catalogue() -> None:
    # the jobs name their rules as string literals; one missing from the table is a
    # finding nobody can look up
    named = set()
    for source in (ROOT / "jobs").rglob("*.py"):
        named |= set(RULE_LITERAL.findall(source.read_text(encoding="utf-8")))
    assert named, "the scan found the jobs' rule ids"
    assert named <= set(RULES), sorted(named - set(RULES))


def test_findings_carry_the_catalogue_severity(tmp_path: Path) -> None:
    from agent.demo import run_demo

    assert run_demo(tmp_path / "demo") == 0
    seen = 0
    for path in (tmp_path / "demo" / "state" / "runs").iterdir():
        from agent.run import load_report

        for finding in load_report(path)["findings"]:
            assert finding["severity"] == severity_of(finding["rule"]), finding
            seen += 1
    assert seen > 0


def test_rules_command_prints_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for rule in RULES.values():
        assert re.search(rf"^  {re.escape(rule.id)} +{rule.severity} ", out, re.MULTILINE)
    assert "None" not in out
    assert main(["rules", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in doc] == list(RULES)
    assert set(doc[0]) == {"id", "job", "severity", "title", "remedy"}


def test_docs_rules_md_is_generated_from_the_catalogue() -> None:
    on_disk = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert on_disk == catalogue_markdown(), (
        "docs/rules.md is out of date: python -m agent.rules > docs/rules.md")


def test_the_readme_points_to_no_file_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../" not in re.sub(r"\.\.\./", "", text)  # "..." elisions are fine, ../x is not
    for target in re.findall(r"\]\(([^)#:]+)\)", text):  # relative markdown links
        assert (ROOT / target).exists(), target
