"""The docs say what the code does: README permission table, example config, CI command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from jobs import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_lists_exactly_each_jobs_graph_permissions() -> None:
    section = README.split("### 1. The app registration", 1)[1].split("###", 1)[0]
    table: dict[str, set[str]] = {}
    for job, permissions in re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \|", section, re.MULTILINE):
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


def test_example_config_is_valid_and_documents_every_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from agent.settings import Settings, load_settings
    from jobs.privileged_roles import RegisterEntry

    example = ROOT / "config" / "agent.example.toml"
    monkeypatch.setenv("DAP_AGENT_GRAPH_URL", "sandbox:")  # the certificate is not here
    settings = load_settings(example)
    assert settings.offboarding.mode == "report"
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    top = set(Settings.model_fields) - {spec.policy_section for spec in REGISTRY.values()}
    assert top - {"client_secret"} <= set(data), "every connection setting is in the example"
    assert "client_secret" in example.read_text(encoding="utf-8")
    for spec in REGISTRY.values():
        keys = {f.alias or name for name, f in spec.policy_model.model_fields.items()}
        assert keys == set(data[spec.policy_section]), spec.policy_section
    entry_keys = {f.alias or n for n, f in RegisterEntry.model_fields.items()}
    assert entry_keys == set(data["privileged_roles"]["register"][0])


def test_example_defaults_are_the_code_defaults() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "config" / "agent.example.toml").read_text(encoding="utf-8"))
    for spec in REGISTRY.values():
        defaults = spec.policy_model().model_dump(by_alias=True)
        for key, value in data[spec.policy_section].items():
            if key in ("register", "emergency_access_accounts"):
                continue  # examples, not defaults
            expected = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
            assert value == expected, f"{spec.policy_section}.{key}"
