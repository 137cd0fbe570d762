"""`dap-agent demo`: every job against the built-in sandbox tenant, no Microsoft account.

The demo writes a real configuration file next to a file-backed sandbox tenant, so after
it the same commands an admin uses work on it (`--config <dir>/agent.toml`).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from agent.errors import EXIT_OK, EXIT_PARTIAL, DapError, UsageError
from agent.run import RunReport
from agent.runner import audit_log, run_job
from agent.settings import load_settings
from agent.tomlwrite import dumps
from jobs import REGISTRY

MARKER = ".dap-agent-demo"


def _program() -> str:
    """How this program was started, so the hints can be pasted (no venv on PATH needed)."""
    if sys.argv and sys.argv[0].endswith("__main__.py"):
        return f"{sys.executable} -m agent"
    if sys.argv and Path(sys.argv[0]).name == "dap-agent" and not shutil.which("dap-agent"):
        return sys.argv[0]
    return "dap-agent"


def prepare(directory: Path, demo_policy: bool = True) -> Path:
    """A fresh demo directory with its config; only ever clears a directory it made."""
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise UsageError(f"{directory} exists and is not a dap-agent demo directory; "
                         "pass --dir with a new or empty directory")
    if (directory / MARKER).exists():
        shutil.rmtree(directory / "state", ignore_errors=True)
        (directory / "tenant.json").unlink(missing_ok=True)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by dap-agent demo; safe to delete\n")
    from agent.sandbox import DEMO_POLICY

    config = {
        "tenant_id": "00000000-0000-4000-8000-00000000d3a0",
        "client_id": "00000000-0000-4000-8000-0000000c11e0",
        "graph_url": f"sandbox:{directory / 'tenant.json'}",
        "state_dir": str(directory / "state"),
        # the demo policy names the demo tenant's people and groups; a generated tenant
        # runs on the defaults
        **(DEMO_POLICY if demo_policy else {}),
    }
    path = directory / "agent.toml"
    path.write_text("# written by `dap-agent demo`: the sandbox tenant, not a real one\n"
                    + dumps(config), encoding="utf-8")
    return path


def generate(directory: Path, users: int, devices: int) -> None:
    """A generated tenant of that size instead of the hand-made demo tenant (benchmarks,
    trying the agent at scale): every device in Intune and Entra, 60% with a BitLocker key,
    a role assignment per 100 users."""
    from datetime import UTC, datetime

    from agent.sandbox.generate import generate_tenant

    tenant = generate_tenant(users=users, managed_devices=devices, entra_devices=devices,
                             recovery_keys=devices * 6 // 10,
                             role_assignments=max(10, users // 100), now=datetime.now(UTC))
    tenant.save(directory / "tenant.json")


async def _run_all(config: Path, history: bool = True,
                   ) -> list[tuple[str, RunReport | None, DapError | None]]:
    from agent.runner import agent_now
    from agent.sandbox.history import seed_history

    settings = load_settings(config)
    if history:  # a year of month ends first, so the service report has its trends
        await seed_history(settings, agent_now(settings))
    results: list[tuple[str, RunReport | None, DapError | None]] = []
    for job_id in REGISTRY:
        try:
            results.append((job_id, await run_job(settings, job_id, trigger="demo"), None))
        except DapError as exc:
            results.append((job_id, getattr(exc, "report", None), exc))
    return results


def run_demo(directory: Path, users: int | None = None, devices: int | None = None) -> int:
    from agent.cli import print_report

    generated = users is not None or devices is not None
    config = prepare(directory, demo_policy=not generated)
    if generated:
        generate(config.parent, users or 0, devices or 0)
        print(f"dap-agent demo: generated tenant of {users or 0} users and {devices or 0} "
              "devices")
    print(f"dap-agent demo: sandbox tenant and state in {config.parent}\n")
    exit_code = EXIT_OK
    results = asyncio.run(_run_all(config, history=not generated))
    for job_id, report, error in results:
        if report is not None:
            print_report(report)
        if error is not None:
            print(f"{job_id}: error: {error}")
            exit_code = max(exit_code, error.exit_code)
        elif report is not None and report.status == "partial":
            exit_code = max(exit_code, EXIT_PARTIAL)
        print()
    result = audit_log(load_settings(config)).verify()
    print(f"audit log: {'intact' if result.ok else 'NOT intact: ' + result.problem}, "
          f"{result.entries} entries")
    prog = _program()
    report = next((r for job, r, _ in results if job == "service-report" and r), None)
    if report is not None and report.summary.get("report_path"):
        print(f"service report: {report.summary['report_path']}")
    print(f"\nTry:  {prog} --config {config} audit show\n"
          f"      {prog} --config {config} run offboarding --json\n"
          f"      DAP_AGENT_OFFBOARDING__MODE=enforce {prog} --config {config} "
          "run offboarding")
    return exit_code if result.ok else 1
