"""Crash consistency: the CLI killed (os._exit, as by `kill -9`) at every point of a run,
then run again without the fault.

offboarding (enforce, the whole demo tenant, file-backed sandbox, fixed DAP_AGENT_NOW):
killed right after each Graph write was applied (the sandbox's `crash_after_writes`: the
answer never arrives) and right before each write is sent (the previous one made and
recorded). tests/test_offboarding_crash.py kills a 6-write tenant after each write; this
covers every point of the demo's enforce run, both sides of each write, and checks the
audit log shows the interrupted run. After the re-run: the tenant is exactly as after an
uncrashed run, every change was made once (the audit log's done/in-flight changes of the
two runs are disjoint and add up to the uncrashed run's; each device got one remote
command, counted in the sandbox's persisted state), and the audit log verifies.

active-users --final: killed before each Graph request, after its one write (the
delivery mail), and on both sides of every atomic file replacement the run makes (export,
snapshot, audit head, run report, job state). Never a half-written export; after a re-run
the month is delivered and `export active-users --month` reproduces it byte for byte.

The subprocesses run in parallel once per module (a fixture); each test checks one property
over all crash points and names the points that break it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from tests.helpers_hardening import (
    DAP_AGENT,
    NOW,
    ForkServer,
    audit_entries,
    change_outcomes,
    clean_env,
    cli,
    demo_config,
    demo_tenant,
    files_under,
    runs_in_audit,
)

pytestmark = pytest.mark.skipif(not DAP_AGENT.exists(), reason="needs the installed dap-agent")

MONTH = NOW.strftime("%Y-%m")
EXPORT = f"active-users-{MONTH}.csv"
WORKERS = 3


@dataclass
class Case:
    """One crash point: the directory it ran in and what the two runs said."""

    point: str
    root: Path
    killed: subprocess.CompletedProcess[str] | None = None
    rerun: subprocess.CompletedProcess[str] | None = None
    export_after_kill: dict[str, bytes] = field(default_factory=dict)
    audit_after_kill: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"


def scratch_dir(prefix: str) -> Path:
    """A directory on tmpfs when there is one: the agent fsyncs every audit entry and every
    atomic write, and on a disk those waits would dominate a hundred short runs."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def prepare(root: Path, seed_tenant: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "tenant.json").write_bytes(seed_tenant)
    return demo_config(root)


def env_for(job: str, faults: dict[str, Any] | None = None) -> dict[str, str]:
    extra = {"DAP_AGENT_NOW": NOW.isoformat()}
    if job == "offboarding":
        extra["DAP_AGENT_OFFBOARDING__MODE"] = "enforce"
    if faults:
        extra["DAP_AGENT_SANDBOX_FAULTS"] = json.dumps(faults)
    return clean_env(**extra)


def run_args(job: str, config: Path) -> list[str]:
    args = ["--config", str(config), "run", job, "--json"]
    return [*args, "--final"] if job == "active-users" else args


def crash_then_rerun(server: ForkServer, case: Case, job: str) -> Case:
    args = run_args(job, case.config)
    if case.point.startswith("crash-after-write:"):
        n = int(case.point.split(":")[1])
        case.killed = server.run(*args, env=env_for(job, {"crash_after_writes": n}))
    else:
        case.killed = server.run(*args, env=env_for(job), point=case.point)
    case.export_after_kill = files_under(case.state / "exports")
    case.audit_after_kill = audit_entries(case.state)
    case.rerun = server.run(*args, env=env_for(job))
    return case


@dataclass
class Baseline:
    root: Path
    result: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    tenant: dict[str, Any]
    replaced: list[str]  # file names, in the order the run replaced them atomically
    writes: int
    requests: int


def baseline(server: ForkServer, root: Path, job: str, seed_tenant: bytes) -> Baseline:
    """The uncrashed run, listing its atomic replacements (`count-replaces`)."""
    config = prepare(root, seed_tenant)
    result = server.run(*run_args(job, config), env=env_for(job), point="count-replaces")
    assert result.returncode in (0, 4), result.stderr[-3000:]
    replaced = json.loads(result.stderr.rsplit("replaced=", 1)[1].splitlines()[0])
    report = json.loads(result.stdout)
    writes = sum(1 for a in report["actions"] if a["status"] in ("done", "failed"))
    return Baseline(root, result, report, json.loads((root / "tenant.json").read_bytes()),
                    replaced, writes, int(report["summary"]["graph_requests"]))


def run_all(servers: list[ForkServer], tmp: Path, job: str, points: list[str],
            seed_tenant: bytes) -> dict[str, Case]:
    cases = {}
    for index, point in enumerate(points):
        root = tmp / f"p{index:02d}"
        prepare(root, seed_tenant)
        cases[point] = Case(point, root)
    shares = [list(cases.values())[n::len(servers)] for n in range(len(servers))]

    def work(n: int) -> None:
        for case in shares[n]:
            crash_then_rerun(servers[n], case, job)

    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(work, range(len(servers))))
    return cases


@contextlib.contextmanager
def fork_servers(tmp: Path) -> Iterator[list[ForkServer]]:
    servers = [ForkServer(tmp) for _ in range(WORKERS)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


def collections(tenant: dict[str, Any]) -> dict[str, list[str]]:
    return {name: sorted(json.dumps(o, sort_keys=True) for o in objs)
            for name, objs in tenant["collections"].items()}


def broken(cases: dict[str, Case], check: Any) -> list[str]:
    """The crash points for which `check(case)` returns a problem (a non-empty string)."""
    problems = []
    for point, case in cases.items():
        try:
            problem = check(case)
        except Exception as exc:  # a check that cannot even run is a problem of that point
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            problems.append(f"{point}: {problem}")
    return problems




@pytest.fixture(scope="module")
def seed_tenant(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("seed") / "tenant.json"
    demo_tenant().save(out)
    return out.read_bytes()


# ---- offboarding ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offboarding(seed_tenant: bytes) -> Iterator[tuple[Baseline, dict[str, Case]]]:
    tmp = scratch_dir("hardening-crash-offboarding-")
    try:
        with fork_servers(tmp) as servers:
            base = baseline(servers[0], tmp / "baseline", "offboarding", seed_tenant)
            made = sum(1 for a in base.report["actions"] if a["status"] == "done")
            assert made >= 10, "the demo's enforce run should make many changes"
            points = [f"crash-after-write:{n}" for n in range(1, made + 1)]
            points += [f"before-write:{n}" for n in range(1, base.writes + 1)]
            yield base, run_all(servers, tmp, "offboarding", points, seed_tenant)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_offboarding_every_kill_point_dies_then_completes(
        offboarding: tuple[Baseline, dict[str, Case]]) -> None:
    base, cases = offboarding

    def check(case: Case) -> str:
        assert case.killed is not None and case.rerun is not None
        if case.killed.returncode != 137:
            return f"not killed: exit {case.killed.returncode} {case.killed.stderr[-500:]}"
        if case.rerun.returncode != base.result.returncode:
            return f"re-run exit {case.rerun.returncode}: {case.rerun.stderr[-800:]}"
        report = json.loads(case.rerun.stdout)
        if report["status"] != base.report["status"]:
            return f"re-run status {report['status']}"
        return ""

    assert broken(cases, check) == []


def test_offboarding_tenant_ends_as_after_an_uncrashed_run(
        offboarding: tuple[Baseline, dict[str, Case]]) -> None:
    base, cases = offboarding
    expected = collections(base.tenant)

    def check(case: Case) -> str:
        final = collections(json.loads((case.root / "tenant.json").read_bytes()))
        diff = [name for name in expected if final.get(name) != expected[name]]
        return f"collections differ: {diff}" if diff else ""

    assert broken(cases, check) == []


def device_commands(tenant: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for device in tenant["collections"]["managedDevices"]:
        for result in device.get("deviceActionResults") or []:
            key = f"{result.get('actionName')} {device.get('deviceName')}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def made_by(entries: list[dict[str, Any]], run_id: str, *,
            in_flight_applied: bool) -> set[tuple[str, str]]:
    """The changes a run made: its done (and refused) ones, and, if it was killed after the
    write of its last planned change was applied, that one too."""
    made: set[tuple[str, str]] = set()
    pending: tuple[str, str] | None = None
    for e in entries:
        if e.get("run_id") != run_id or e.get("event") != "action":
            continue
        key = (str(e["action"]), str(e["target"]["id"]))
        if e.get("status") == "planned" and e.get("dry_run") is False:
            pending = key
        elif e.get("status") in ("done", "failed"):
            made.add(key)
            pending = None
    if pending is not None and in_flight_applied:
        made.add(pending)
    return made


def test_offboarding_makes_no_change_twice(offboarding: tuple[Baseline, dict[str, Case]]) -> None:
    base, cases = offboarding
    base_entries = audit_entries(base.root / "state")
    (base_run,) = runs_in_audit(base_entries)
    expected = made_by(base_entries, base_run, in_flight_applied=False)
    expected_commands = device_commands(base.tenant)
    assert set(expected_commands.values()) == {1}

    def check(case: Case) -> str:
        entries = audit_entries(case.state)
        killed_run, rerun = runs_in_audit(entries)
        first = made_by(entries, killed_run,
                        in_flight_applied=case.point.startswith("crash-after-write"))
        second = made_by(entries, rerun, in_flight_applied=False)
        refused = {k for k, v in change_outcomes(base_entries).items() if v == ["failed"]}
        twice = (first & second) - refused
        if twice:
            return f"made in both runs: {sorted(twice)}"
        if (first | second) != expected:
            return (f"made {sorted(first | second ^ expected)} differently from an "
                    "uncrashed run")
        commands = device_commands(json.loads((case.root / "tenant.json").read_bytes()))
        if commands != expected_commands:
            return f"device commands {commands}"
        return ""

    assert broken(cases, check) == []


def test_offboarding_audit_log_verifies_and_shows_the_interrupted_run(
        offboarding: tuple[Baseline, dict[str, Case]]) -> None:
    _, cases = offboarding

    def check(case: Case) -> str:
        result = AuditLog(case.state / "audit.jsonl").verify()
        if not result.ok:
            return f"audit log not intact: line {result.bad_line}: {result.problem}"
        runs = list(runs_in_audit(audit_entries(case.state)).values())
        if runs[0] != ["run-started"] or runs[1][-1] not in ("run-finished", "run-failed"):
            return f"runs in the audit log: {runs}"
        return ""

    assert broken(cases, check) == []
    any_case = next(iter(cases.values()))
    verify = cli("--config", str(any_case.config), "audit", "verify", env=env_for("offboarding"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = cli("--config", str(any_case.config), "audit", "show", env=env_for("offboarding"))
    assert "running?" in shown.stdout  # the killed run is listed as never finished


# ---- active-users --final ------------------------------------------------------------------

@pytest.fixture(scope="module")
def active_users(seed_tenant: bytes) -> Iterator[tuple[Baseline, dict[str, Case]]]:
    tmp = scratch_dir("hardening-crash-active-users-")
    try:
        with fork_servers(tmp) as servers:
            yield from _active_users(servers, tmp, seed_tenant)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _active_users(servers: list[ForkServer], tmp: Path,
                  seed_tenant: bytes) -> Iterator[tuple[Baseline, dict[str, Case]]]:
    base = baseline(servers[0], tmp / "baseline", "active-users", seed_tenant)
    assert base.report["summary"]["delivered"] is True
    points = [f"before-request:{n}" for n in range(1, base.requests + 1)]
    points += [f"crash-after-write:{n}" for n in range(1, base.writes + 1)]  # the mail
    # after every atomic replacement; before the ones of the month's own files (their
    # temporary file written, not yet renamed)
    points += [f"after-replace:{n}" for n in range(1, len(base.replaced) + 1)]
    points += [f"before-replace:{n}" for n, name in enumerate(base.replaced, start=1)
               if name.startswith((f"active-users-{MONTH}", MONTH))]
    yield base, run_all(servers, tmp, "active-users", points, seed_tenant)


def test_active_users_export_is_never_half_written(
        active_users: tuple[Baseline, dict[str, Case]]) -> None:
    base, cases = active_users
    delivered = (base.root / "state" / "exports" / EXPORT).read_bytes()

    def check(case: Case) -> str:
        assert case.killed is not None
        if case.killed.returncode != 137:
            return f"not killed: exit {case.killed.returncode} {case.killed.stderr[-500:]}"
        visible = {n: d for n, d in case.export_after_kill.items() if not n.startswith(".")}
        if set(visible) - {EXPORT}:
            return f"unexpected files {sorted(visible)}"
        if EXPORT in visible and visible[EXPORT] != delivered:
            return "the export on disk is not the complete export"
        return ""

    assert broken(cases, check) == []


def test_active_users_rerun_delivers_a_reproducible_month(
        active_users: tuple[Baseline, dict[str, Case]], tmp_path: Path) -> None:
    base, cases = active_users
    delivered = (base.root / "state" / "exports" / EXPORT).read_bytes()
    from agent.cli import main

    def check(case: Case) -> str:
        assert case.rerun is not None
        if case.rerun.returncode != 0:
            return f"re-run exit {case.rerun.returncode}: {case.rerun.stderr[-800:]}"
        summary = json.loads(case.rerun.stdout)["summary"]
        if not summary["delivered"]:
            return "month not delivered by the re-run"
        export = (case.state / "exports" / EXPORT).read_bytes()
        if export != delivered:
            return "export differs from the uncrashed run's"
        copy = tmp_path / f"{case.root.name}.csv"
        code = main(["--config", str(case.config), "export", "active-users", "--month", MONTH,
                     "--output", str(copy)])
        if code != 0 or copy.read_bytes() != export:
            return f"export --month did not reproduce it (exit {code})"
        if main(["--config", str(case.config), "export", "active-users", "--month",
                 MONTH]) != 0:
            return "export --month onto the delivered file failed"
        if (case.state / "exports" / EXPORT).read_bytes() != export:
            return "export --month changed the delivered file"
        result = AuditLog(case.state / "audit.jsonl").verify()
        if not result.ok:
            return f"audit log not intact: line {result.bad_line}: {result.problem}"
        return ""

    assert broken(cases, check) == []


def test_active_users_audit_log_shows_the_interrupted_run(
        active_users: tuple[Baseline, dict[str, Case]]) -> None:
    _, cases = active_users

    def check(case: Case) -> str:
        runs = list(runs_in_audit(audit_entries(case.state)).values())
        started = any(e.get("event") == "run-started" for e in case.audit_after_kill)
        finished = any(e.get("event") in ("run-finished", "run-failed")
                       for e in case.audit_after_kill)
        if finished:
            return ""  # killed after the run was recorded (storing the job state)
        expected = [["run-started"], ["run-started", "run-finished"]] if started else \
            [["run-started", "run-finished"]]
        return f"runs in the audit log: {runs}" if runs != expected else ""

    assert broken(cases, check) == []


def test_active_users_delivery_mail_reaches_the_customer_and_repeats_say_so(
        active_users: tuple[Baseline, dict[str, Case]]) -> None:
    """At least once, never silently twice: the deadline matters more than a duplicate, so a
    run killed after Graph took the mail but before it was recorded sends it again, marked
    "(possible repeat)" (sendMail is not idempotent; reading the mailbox would need
    Mail.ReadWrite)."""
    base, cases = active_users
    assert len(base.tenant["collections"]["sentMail"]) == 1

    def check(case: Case) -> str:
        sent = json.loads((case.root / "tenant.json").read_bytes())["collections"]["sentMail"]
        if not sent:
            return "no mail sent"
        unmarked = [m for m in sent[1:] if "possible repeat" not in json.dumps(m)]
        return f"{len(unmarked)} repeated mails not marked as such" if unmarked else ""

    assert broken(cases, check) == []


def test_active_users_delivery_is_audited_once(
        active_users: tuple[Baseline, dict[str, Case]]) -> None:
    _, cases = active_users

    def check(case: Case) -> str:
        delivered = [e for e in audit_entries(case.state) if e.get("event") == "month-delivered"]
        return f"{len(delivered)} month-delivered entries" if len(delivered) != 1 else ""

    assert broken(cases, check) == []


def test_active_users_leaves_no_stray_temporary_files(
        active_users: tuple[Baseline, dict[str, Case]]) -> None:
    """A kill between writing a temporary file and renaming it leaves the temporary file;
    the re-run must not leave it lying around in the exports (a partial copy of data)."""
    _, cases = active_users

    def check(case: Case) -> str:
        stray = [p.name for p in (case.state / "exports").iterdir() if p.name.startswith(".")]
        return f"left behind: {stray}" if stray else ""

    assert broken(cases, check) == []

