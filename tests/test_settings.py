"""Settings: every source in its place, strict validation, every problem at once, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import Settings, config_path, load_settings
from tests.conftest import write_config

BASE = {"tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "client_id": "00000000-0000-4000-8000-0000000000bb", "graph_url": "sandbox:",
        "state_dir": "/tmp/s"}


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.exit_code == 2
    return info.value.problems


def test_defaults_follow_the_spec(tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path / "a.toml", **BASE))
    assert s.timezone == "Europe/Amsterdam"
    assert s.authority_host == "https://login.microsoftonline.com"
    assert s.offboarding.mode == "report"
    assert s.offboarding.retention_months == 3
    assert s.active_users.schedule == "last-working-day 07:00"
    assert s.privileged_roles.global_admin_count == 2


def test_environment_beats_file_and_nests_with_double_underscore(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAP_AGENT_TENANT_ID", "from-env.onmicrosoft.com")
    monkeypatch.setenv("DAP_AGENT_OFFBOARDING__MODE", "enforce")
    s = load_settings(write_config(tmp_path / "a.toml", **BASE))
    assert s.tenant_id == "from-env.onmicrosoft.com" and s.offboarding.mode == "enforce"


def test_credentials_directory_supplies_secrets(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "client_secret").write_text("s3cr3t-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    data = {**BASE, "graph_url": "https://graph.microsoft.com"}
    s = load_settings(write_config(tmp_path / "a.toml", **data))
    assert s.client_secret is not None
    assert s.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s)


def test_real_graph_needs_a_credential(tmp_path: Path) -> None:
    data = {**BASE, "graph_url": "https://graph.microsoft.com"}
    found = problems(write_config(tmp_path / "a.toml", **data))
    assert any("no credential" in p for p in found)


def test_every_problem_at_once_with_file_key_and_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path / "a.toml", **BASE, bogus=1, timezone="Mars/Olympus",
                        offboarding={"mode": "enforced", "colour": "red"},
                        active_users={"schedule": "every day"})
    found = problems(path)
    assert len(found) == 5
    joined = "\n".join(found)
    for expected in (f"{path}: bogus: unknown key", f"{path}: offboarding.colour: unknown key",
                     f"{path}: offboarding.mode:", f"{path}: timezone: unknown time zone",
                     f"{path}: active_users.schedule:"):
        assert expected in joined


def test_missing_required_settings_are_named(tmp_path: Path) -> None:
    found = problems(write_config(tmp_path / "a.toml", graph_url="sandbox:"))
    assert any("tenant_id: required" in p and "DAP_AGENT_TENANT_ID" in p for p in found)
    assert any("client_id: required" in p for p in found)


def test_environment_errors_name_the_variable(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAP_AGENT_OFFBOARDING__MAX_PURGE_PER_RUN", "many")
    found = problems(write_config(tmp_path / "a.toml", **BASE))
    assert found[0].startswith("environment DAP_AGENT_OFFBOARDING__MAX_PURGE_PER_RUN:")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('tenant_id = "x\n')
    assert "line 1" in problems(path)[0]


def test_missing_file(tmp_path: Path) -> None:
    assert "file not found" in problems(tmp_path / "none.toml")[0]


def test_http_graph_url_is_refused(tmp_path: Path) -> None:
    found = problems(write_config(tmp_path / "a.toml", **{**BASE, "graph_url": "http://x"}))
    assert any("https://" in p for p in found)


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    found = problems(write_config(tmp_path / "a.toml", **{**BASE, "client_secret": 12345678}))
    assert any("client_secret" in p for p in found)
    assert not any("12345678" in p for p in found)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAP_AGENT_CONFIG", raising=False)
    assert config_path(None) == Path("/etc/dap-agent/agent.toml")
    monkeypatch.setenv("DAP_AGENT_CONFIG", "/x/y.toml")
    assert config_path(None) == Path("/x/y.toml")
    assert config_path("/a.toml") == Path("/a.toml")


def test_state_directory_defaults_to_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/dap-agent:/var/lib/other")
    assert Settings.model_fields["state_dir"].default_factory() == Path("/var/lib/dap-agent")  # type: ignore[call-arg, misc]
