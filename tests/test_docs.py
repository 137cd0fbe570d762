"""The docs say what the code does: README permission table, example config, CI command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from jobs import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_lists_exactly_each_jobs_graph_permissions() -> None:
    table: dict[str, set[str]] = {}
    for job, permissions in re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \|", README, re.MULTILINE):
        table[job] = set(re.findall(r"`([\w.-]+)`", permissions))
    for spec in REGISTRY.values():
        assert table.get(spec.id) == set(spec.permissions), spec.id


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in script
    extracted = subprocess.run(
        ["bash", "-c", "sed -n '/<!-- test-command -->/,/^```$/p' README.md | sed '1,2d;$d'"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted.startswith("python3 -m venv .venv")
    assert "pytest" in extracted
