"""The systemd units: `systemd-analyze verify` and `security` (where installed), and the
settings the daemon relies on (checked by reading the files, so this part always runs).

CI installs systemd-analyze with `apt-get install --no-install-recommends systemd` (no
running systemd needed); without it the systemd-analyze tests skip.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.serve import CANCEL_TIMEOUT, DRAIN_TIMEOUT
from agent.settings import CREDENTIAL_FILES

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNIT_FILES = ("dap-agent.service", "dap-agent@.service")
INSTALLED = "/opt/dap-agent/.venv/bin/dap-agent"
ANALYZE = shutil.which("systemd-analyze")


def _analyze_version() -> int:
    if ANALYZE is None:
        return 0
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match[1]) if match else 0


# `security --offline=yes` (a unit file, no running systemd) is systemd 250 or later
needs_analyze = pytest.mark.skipif(_analyze_version() < 250,
                                   reason="systemd-analyze >= 250 is not installed")


def service(name: str) -> dict[str, list[str]]:
    """The [Service] section, every value of each key (keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def checkable_copy(name: str, directory: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's dap-agent (verify checks that
    the program exists; /opt/dap-agent is where the README installs it)."""
    text = (UNITS / name).read_text()
    assert INSTALLED in text
    path = directory / name
    path.write_text(text.replace(INSTALLED, str(Path(sys.executable).with_name("dap-agent"))))
    return path


@pytest.mark.parametrize("name", UNIT_FILES)
def test_unit_settings(name: str) -> None:
    svc = service(name)
    one = {key: values[-1] for key, values in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) >= 60
    # SIGTERM: the daemon drains, then cancels, within the stop timeout
    assert int(one["TimeoutStopSec"]) > DRAIN_TIMEOUT + CANCEL_TIMEOUT
    # one user per template instance: no instance reads another's state
    assert one["User"] == ("dap-agent-%i" if "@" in name else "dap-agent")
    assert one["Group"] == one["User"] and "DynamicUser" not in svc
    assert one["StateDirectory"].startswith("dap-agent")
    assert one["ConfigurationDirectory"] == "dap-agent"
    assert one["ExecStart"].split()[-1] == "serve"
    # the key is encrypted at rest (systemd-creds), never a plaintext file a group reads
    assert "LoadCredential" not in svc
    credential_ids = [value.split(":", 1)[0] for value in svc["LoadCredentialEncrypted"]]
    assert credential_ids and set(credential_ids) <= set(CREDENTIAL_FILES)
    assert all(v.split(":", 1)[1].startswith("/etc/credstore.encrypted/")
               for v in svc["LoadCredentialEncrypted"])
    assert "MemoryDenyWriteExecute" not in svc  # breaks cffi callbacks
    assert one["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert one["CapabilityBoundingSet"] == ""
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert one["RestartPreventExitStatus"] == "2"  # a config error does not restart-loop
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "LockPersonality",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict" and one["UMask"] == "0077"
    assert one["SystemCallArchitectures"] == "native"


def test_template_is_per_tenant() -> None:
    svc = service("dap-agent@.service")
    assert "--config /etc/dap-agent/%i.toml" in svc["ExecStart"][0]
    assert svc["StateDirectory"] == ["dap-agent/%i"]
    assert all("%i" in value for value in svc["LoadCredentialEncrypted"])
    single = service("dap-agent.service")
    differing = {k for k in set(svc) | set(single) if svc.get(k) != single.get(k)}
    assert differing == {"ExecStart", "StateDirectory", "LoadCredentialEncrypted",
                         "SyslogIdentifier", "User", "Group"}


@pytest.mark.parametrize("name", UNIT_FILES)
def test_documentation_points_at_the_readme_and_names_the_check(name: str) -> None:
    text = (UNITS / name).read_text()
    docs = [line.split("=", 1)[1] for line in text.splitlines()
            if line.startswith("Documentation=")]
    assert docs[0] == "file:/opt/dap-agent/README.md"  # where the README installs it
    assert "systemd-analyze verify" in text  # the check, run on the installed unit


def test_units_parse_as_ini() -> None:
    for name in UNIT_FILES:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string((UNITS / name).read_text())
        assert set(parser.sections()) == {"Unit", "Service", "Install"}


@needs_analyze
@pytest.mark.parametrize(("name", "verify_as"), [
    ("dap-agent.service", "dap-agent.service"),
    ("dap-agent@.service", "dap-agent@.service"),
    ("dap-agent@.service", "dap-agent@contoso.service"),
])
def test_systemd_analyze_verify(tmp_path: Path, name: str, verify_as: str) -> None:
    checkable_copy(name, tmp_path)
    result = subprocess.run([str(ANALYZE), "verify", f"./{verify_as}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values; they show up as messages
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "dap-agent" in line]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize("name", UNIT_FILES)
def test_systemd_analyze_security_is_ok_or_better(tmp_path: Path, name: str) -> None:
    checkable_copy(name, tmp_path)
    result = subprocess.run([str(ANALYZE), "security", "--offline=yes", f"./{name}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    score, level = float(match[1]), match[2]
    assert level in ("OK", "SAFE", "PERFECT"), result.stdout
    assert score <= 1.5, result.stdout  # 1.1 today (systemd 252); keep it from drifting
