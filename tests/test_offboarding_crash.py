"""offboarding cut off at every step, then run again: the end state is right, no change is
made twice, and the audit log still verifies.

In-process: the transport raises `Crash` (a BaseException, like the process dying) right
after a write was applied (its answer lost, the ledger not written) or right before the
next write (the ledger written); a third variant cuts the ledger's last line in half (a
crash while appending). Out of process: the sandbox's `crash_after_writes` fault kills
`.venv/bin/dap-agent` with os._exit(137) right after the Nth write was saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.sandbox.tenant import SandboxTenant
from jobs.offboarding import LEDGER_FILE
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.helpers_offboarding import (
    DAY,
    NOW,
    Crash,
    CrashingTransport,
    add_deleted,
    add_device,
    add_leaver,
    announce,
    done,
    ledger_of,
    run_off,
    settings,
    small_tenant,
    writes,
)


def leaver_tenant() -> SandboxTenant:
    """One leaver with a company laptop and a BYOD phone: 4 writes (disable, revoke,
    retire IPH-LARS, wipe LT-LARS)."""
    tenant = small_tenant()
    lars = add_leaver(tenant, "lars.laptop")
    add_device(tenant, "LT-LARS", lars)
    add_device(tenant, "IPH-LARS", lars, owner_type="personal")
    return tenant


def purge_tenant() -> SandboxTenant:
    """One disabled leaver past retention: 2 writes (delete, permanent delete)."""
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=130, enabled=False, revoked_days_after=1)
    return tenant


def half_purged_tenant() -> SandboxTenant:
    """A due leaver someone deleted but did not purge: 1 write."""
    tenant = small_tenant()
    add_deleted(tenant, "hugo.halfweg", left_days_ago=140)
    return tenant


def state(tenant: SandboxTenant) -> dict[str, Any]:
    """What matters of the tenant's end state."""
    return {
        "users": sorted((u["userPrincipalName"], u["accountEnabled"],
                         u.get("signInSessionsValidFromDateTime") is not None)
                        for u in tenant.all("users")),
        "deleted": sorted(d["userPrincipalName"] for d in tenant.all("deletedItems")),
        "devices": sorted((d["deviceName"], d["managementState"])
                          for d in tenant.all("managedDevices")),
    }


ANNOUNCED = {"leaver": (), "purge": ("olaf.oud",), "half-purged": ("hugo.halfweg",)}
SCENARIOS: dict[str, tuple[Callable[[], SandboxTenant], int]] = {
    "leaver": (leaver_tenant, 4),
    "purge": (purge_tenant, 2),
    "half-purged": (half_purged_tenant, 1),
}
CASES = [(name, step, mode) for name, (_, n) in SCENARIOS.items()
         for step in range(1, n + 1) for mode in ("after-write", "before-next", "torn-ledger")]


@pytest.mark.parametrize(("scenario", "step", "mode"), CASES)
async def test_crash_at_each_step_then_rerun(tmp_path: Path, scenario: str, step: int,
                                             mode: str) -> None:
    build, total = SCENARIOS[scenario]
    reference = build()
    (tmp_path / "ref").mkdir()
    announce(settings(tmp_path / "ref"), *ANNOUNCED[scenario])
    clean = await run_off(reference, settings(tmp_path / "ref"))
    assert clean.status == "ok" and sum(writes(reference).values()) == total

    tenant = build()
    cfg = settings(tmp_path)
    announce(cfg, *ANNOUNCED[scenario])
    if mode == "after-write":  # write `step` applied, its answer and ledger entry lost
        transport = CrashingTransport(tenant, after_write=step)
    else:  # write `step` and its ledger entry completed, dead before the next write
        transport = CrashingTransport(tenant, before_write=step + 1)
    if mode != "after-write" and step == total:
        await run_off(tenant, cfg, transport=transport)  # no next write: dies at the end
    else:
        with pytest.raises(Crash):
            await run_off(tenant, cfg, transport=transport)
    assert sum(writes(tenant).values()) == step
    if mode == "torn-ledger":
        ledger = cfg.state_dir / LEDGER_FILE
        data = ledger.read_bytes()
        ledger.write_bytes(data[:-10])  # the last append was cut off mid-line

    again = await run_off(tenant, cfg, now=NOW + DAY / 24)
    assert again.status == "ok", again.error
    assert state(tenant) == state(reference)
    assert writes(tenant) == writes(reference)  # every change made exactly once
    assert len(done(again)) == total - step     # the rerun made only the rest
    last = await run_off(tenant, cfg, now=NOW + DAY)
    assert done(last) == [] and writes(tenant) == writes(reference)
    assert AuditLog(cfg.state_dir / "audit.jsonl").verify().ok
    records = list(ledger_of(cfg).records())
    assert len(records) == 1
    if scenario == "leaver":
        assert records[0].inactive and records[0].revoked_at is not None
        assert {d.name for d in records[0].devices.values()} == {"LT-LARS", "IPH-LARS"}
    else:
        assert records[0].purged_at is not None


# ---- true kills: a subprocess running the CLI on a file-backed sandbox --------------------------

DAP_AGENT = Path(sys.executable).with_name("dap-agent")


def cli(config: Path, *, faults: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DAP_AGENT_") and k != "CREDENTIALS_DIRECTORY"}
    env["DAP_AGENT_NOW"] = NOW.isoformat()
    if faults:
        env["DAP_AGENT_SANDBOX_FAULTS"] = json.dumps(faults)
    return subprocess.run([str(DAP_AGENT), "--config", str(config), "run", "offboarding",
                           "--json"], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def both_tenant() -> SandboxTenant:
    """The leaver and the purge together: 6 writes in this order (by UPN)."""
    tenant = leaver_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=130, enabled=False, revoked_days_after=1)
    return tenant


ORDER = [("disable-user", "lars.laptop@contoso.nl"), ("revoke-sessions", "lars.laptop@contoso.nl"),
         ("retire-device", "IPH-LARS"), ("wipe-device", "LT-LARS"),
         ("delete-user", "olaf.oud@contoso.nl"), ("purge-user", "olaf.oud@contoso.nl")]


@pytest.mark.skipif(not DAP_AGENT.exists(), reason="needs the installed dap-agent script")
@pytest.mark.parametrize("killed_after", range(1, len(ORDER) + 1))
def test_killed_after_each_write_then_rerun(tmp_path: Path, killed_after: int) -> None:
    tenant_file = tmp_path / "tenant.json"
    both_tenant().save(tenant_file)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'tenant_id = "{TENANT_ID}"\nclient_id = "{CLIENT_ID}"\n'
        f'graph_url = "sandbox:{tenant_file}"\nstate_dir = "{tmp_path / "state"}"\n'
        '[offboarding]\nmode = "enforce"\n', encoding="utf-8")

    announce(tmp_path / "state", "olaf.oud")
    killed = cli(config, faults={"crash_after_writes": killed_after})
    assert killed.returncode == 137, killed.stderr[-2000:]

    rerun = cli(config)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert report["status"] == "ok"
    made = [(a["action"], a["target"]["name"]) for a in report["actions"]
            if a["status"] == "done"]
    assert made == ORDER[killed_after:]  # nothing before the kill is made again

    final = SandboxTenant.load(tenant_file)
    users = {u["userPrincipalName"]: u for u in final.all("users")}
    assert users["lars.laptop@contoso.nl"]["accountEnabled"] is False
    assert "olaf.oud@contoso.nl" not in users and final.all("deletedItems") == []
    devices = {d["deviceName"]: d["managementState"] for d in final.all("managedDevices")}
    assert devices == {"LT-LARS": "wipePending", "IPH-LARS": "retirePending"}
    verify = subprocess.run([str(DAP_AGENT), "--config", str(config), "audit", "verify"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert AuditLog(tmp_path / "state" / "audit.jsonl").verify().ok
