"""Helpers for the hardening suite: demo tenants and settings, a fault-aware fake clock,
report normalisation, a payload-mutating transport, and CLI subprocesses that die on cue.

The "kill" runner (`python -m tests.helpers_hardening kill ...`) runs `agent.cli.main` in a
child process and ends it with `os._exit(137)` at a chosen point: no `finally`, no `atexit`,
no flush: what the process had written to disk is all that is left, as after `kill -9`.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import os
import stat
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
DAP_AGENT = PYTHON.with_name("dap-agent")

# A Wednesday in March, mid-month: no month end, no weekend (the demo seeds place dates
# relative to it).
NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
JOB_IDS = ("active-users", "offboarding", "device-compliance", "privileged-roles")
TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
CLIENT_ID = "00000000-0000-4000-8000-0000000000bb"


# ---- configuration -------------------------------------------------------------------------

def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def demo_config_data(tmp: Path, *, graph_url: str | None = None,
                     **sections: Any) -> dict[str, Any]:
    """The demo's configuration (its DEMO_POLICY, the register dated for NOW) with the state
    under `tmp`."""
    from agent.sandbox import DEMO_POLICY
    from agent.sandbox.seed import roles

    data: dict[str, Any] = {
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "graph_url": graph_url or f"sandbox:{tmp / 'tenant.json'}",
        "state_dir": str(tmp / "state"),
    }
    policy = deep_merge(DEMO_POLICY, roles.demo_policy(NOW))
    return deep_merge({**data, **policy}, sections)


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    from agent.tomlwrite import dumps

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(dict(data)), encoding="utf-8")
    return path


def demo_config(tmp: Path, *, graph_url: str | None = None, **sections: Any) -> Path:
    return write_toml(tmp / "agent.toml", demo_config_data(tmp, graph_url=graph_url, **sections))


def demo_settings(tmp: Path, **sections: Any) -> Any:
    from agent.settings import load_settings

    return load_settings(demo_config(tmp, **sections))


def demo_tenant(now: datetime = NOW) -> Any:
    from agent.sandbox import demo_tenant as build

    return build(now)


# ---- time: a fake clock for the one retry layer -----------------------------------------

class FakeClock:
    """Sleeps that take no time but are recorded, and a clock they advance.

    Installed as the GraphClient's `sleep` and (with `install`) as tenacity's clock, so the
    retry layer's time budget (`stop_before_delay`) sees the waits it asked for. Each
    asyncio task has its own timeline (concurrent requests wait side by side, as they would
    in real time); `waits` keeps (seconds, requests the sandbox had seen, task) per sleep.
    """

    def __init__(self, requests: Sequence[Any] | None = None) -> None:
        self._requests = requests
        self.waits: list[tuple[float, int, str]] = []
        self.by_task: dict[str, float] = defaultdict(float)

    @staticmethod
    def _task() -> str:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return "main"
        return task.get_name() if task is not None else "main"

    async def __call__(self, seconds: float) -> None:
        task = self._task()
        seen = len(self._requests) if self._requests is not None else -1
        self.waits.append((seconds, seen, task))
        self.by_task[task] += seconds

    def monotonic(self) -> float:
        return self.by_task[self._task()]

    @property
    def seconds(self) -> list[float]:
        return [w for w, _, _ in self.waits]

    def install(self, monkeypatch: Any) -> None:
        import tenacity

        monkeypatch.setattr(tenacity, "time", self)


def check_retry_after_honoured(records: Sequence[Any], clock: FakeClock,
                               retry_after: float) -> int:
    """Every request Graph answered 429/503 (a read, or a write safe to repeat) was repeated
    only after a wait of exactly its Retry-After, taken after that answer and before the
    repetition. Returns how many such answers there were."""
    unmatched = list(clock.waits)
    faulted = 0
    for index, record in enumerate(records):
        if record.fault not in ("throttle", "unavailable"):
            continue
        again = next((j for j in range(index + 1, len(records))
                      if (records[j].method, records[j].path, records[j].query)
                      == (record.method, record.path, record.query)), None)
        if again is None:
            continue  # not repeated (a write that is not safe to repeat): checked elsewhere
        faulted += 1
        match = next((w for w in unmatched if index + 1 <= w[1] <= again), None)
        assert match is not None, (
            f"request {index + 1} ({record.method} {record.path}) got {record.status} and was "
            f"repeated as request {again + 1} without a wait in between")
        assert match[0] == retry_after, (
            f"request {index + 1}: waited {match[0]} s, Graph said Retry-After {retry_after}")
        unmatched.remove(match)
    assert not unmatched, f"waits without a throttled request before them: {unmatched}"
    return faulted


# ---- Graph clients over the sandbox --------------------------------------------------------

def graph_client(transport: httpx.AsyncBaseTransport, *, sleep: Callable[[float], Any],
                 retry: Any = None, roles: Sequence[str] | None = None) -> tuple[Any, Any]:
    """(GraphClient, its SandboxTokenSource) over `transport`, with the SDK middleware."""
    from agent.graph.client import GraphClient
    from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
    from agent.sandbox import SandboxTokenSource

    tokens = SandboxTokenSource(list(roles) if roles is not None else None)
    http = _with_sdk_middleware(httpx.AsyncClient(transport=transport))
    return GraphClient(http, tokens, graph_url=SANDBOX_GRAPH_URL, retry=retry,
                       sleep=sleep), tokens


async def run_job_over(transport: httpx.AsyncBaseTransport, settings: Any, job_id: str, *,
                       sleep: Callable[[float], Any], now: datetime = NOW,
                       dry_run: bool = False, final: bool = False,
                       retry: Any = None) -> tuple[Any, Any]:
    """(report, token source) of `job_id` run through the real runner over `transport`.
    A failed run's report is returned too (the runner attaches it to the exception)."""
    from agent.errors import DapError
    from agent.runner import run_job

    graph, tokens = graph_client(transport, sleep=sleep, retry=retry)
    async with graph:
        try:
            report: Any = await run_job(settings, job_id, dry_run=dry_run, final=final,
                                        now=now, graph=graph)
        except DapError as exc:
            report = getattr(exc, "report", None)
            if report is None:
                raise
    return report, tokens


def sandbox_transport(tenant: Any, faults: Any = None) -> Any:
    from agent.sandbox.transport import SandboxTransport

    if faults is not None:
        tenant.faults = faults
    return SandboxTransport(tenant)


# ---- comparing runs ----------------------------------------------------------------------

VOLATILE_SUMMARY = ("graph_requests",)


def normalise(report: Any, root: Path) -> dict[str, Any]:
    """A report without what differs between two equal runs: run id, times, request ids,
    the request count, the audit checkpoint (entries carry times), and the state
    directory's location."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    for key in ("run_id", "started_at", "finished_at", "audit_checkpoint"):
        data.pop(key, None)
    for key in VOLATILE_SUMMARY:
        data["summary"].pop(key, None)
    for action in data["actions"]:
        action.pop("request_id", None)
    text = json.dumps(data, sort_keys=True, default=str).replace(str(root), "<root>")
    result: dict[str, Any] = json.loads(text)
    return result


def tenant_state(tenant: Any) -> dict[str, list[Any]]:
    """The tenant's objects, comparable between two tenants built the same way."""
    return {name: sorted(json.dumps(o, sort_keys=True) for o in objs.values())
            for name, objs in tenant.collections.items()}


def device_actions(tenant: Any) -> Counter[str]:
    """Remote actions (wipe/retire) Intune received, per device name: each one is a command
    the device will execute; two would be a second factory reset."""
    counts: Counter[str] = Counter()
    for device in tenant.all("managedDevices"):
        for result in device.get("deviceActionResults") or []:
            if result.get("actionName") in ("wipe", "retire"):
                counts[f"{result['actionName']} {device.get('deviceName')}"] += 1
    return counts


def files_under(directory: Path) -> dict[str, bytes]:
    """Every file's content; gzip files (run reports) uncompressed, so a scan for secrets
    sees what they hold."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)):
            gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def modes_under(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)) or ".": stat.S_IMODE(p.stat().st_mode)
            for p in [directory, *sorted(directory.rglob("*"))]}


# ---- the audit log -----------------------------------------------------------------------

def audit_entries(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def runs_in_audit(entries: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """run id -> its lifecycle events in order (run-started, run-finished/run-failed)."""
    runs: dict[str, list[str]] = {}
    for entry in entries:
        if entry.get("event") in ("run-started", "run-finished", "run-failed"):
            runs.setdefault(str(entry["run_id"]), []).append(str(entry["event"]))
    return runs


def attempted_changes(entries: Iterable[Mapping[str, Any]]) -> dict[str, set[tuple[str, str]]]:
    """run id -> the (action, target id) changes it set out to make (planned, not dry run)."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for entry in entries:
        if entry.get("event") == "action" and entry.get("status") == "planned" \
                and entry.get("dry_run") is False:
            found[str(entry["run_id"])].add((str(entry["action"]),
                                             str(entry["target"]["id"])))
    return found


def change_outcomes(entries: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(action, target id) -> the outcomes audited for it over all runs (done/failed/...)."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in entries:
        if entry.get("event") == "action" and entry.get("status") in ("done", "failed"):
            found[(str(entry["action"]), str(entry["target"]["id"]))].append(
                str(entry["status"]))
    return found


# ---- payload oddities: a transport that rewrites list pages ------------------------------

# (path, page number of that path from 0, body) -> a new body, raw bytes, or None (as is)
Mutator = Callable[[str, int, dict[str, Any]], dict[str, Any] | bytes | None]


@dataclass
class MutatingTransport(httpx.AsyncBaseTransport):
    """The sandbox, but each successful GET's JSON body passes through `mutate(path, n,
    body)` first (`n` counts that path's pages from 0; return None to leave it)."""

    inner: httpx.AsyncBaseTransport
    mutate: Mutator
    pages: Counter[str] = field(default_factory=Counter)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or response.status_code != 200:
            return response
        await response.aread()
        path = request.url.path.split("/v1.0", 1)[-1]
        number = self.pages[path]
        self.pages[path] += 1
        changed = self.mutate(path, number, json.loads(response.content))
        if changed is None:
            return response
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length",)}
        content = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
        return httpx.Response(response.status_code, headers=headers, content=content,
                              request=request)


# ---- the CLI in a child process ------------------------------------------------------------

def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any DAP_AGENT_* or systemd credential setting of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DAP_AGENT_") and k not in ("CREDENTIALS_DIRECTORY",
                                                           "STATE_DIRECTORY")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def cli(*args: str, env: Mapping[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DAP_AGENT), *args], env=dict(env or clean_env()),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT)


def killed_cli(point: str, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI, killed at `point` (see `_install_kill`): exit 137 if it got there."""
    return subprocess.run([str(PYTHON), "-m", "tests.helpers_hardening", "kill", point,
                           "--", *args], env=dict(env or clean_env()), capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=ROOT)


def _die() -> None:
    os._exit(137)


def _install_kill(point: str) -> Callable[[], None] | None:
    """Arrange for this process to die at `point`:

    - `before-write:N`: right before the Nth Graph write reaches the sandbox (N-1 writes
      made and recorded, the Nth audited as planned or not yet);
    - `before-request:N`: right before the Nth Graph request (reads included);
    - `before-replace:N` / `after-replace:N`: around the Nth `os.replace` of the process,
      i.e. every atomic file write (export, snapshot, run report, audit head, job state)
      cut off with its temporary file written but not renamed, or just after the rename;
    - `count-replaces`: no kill; the returned callback prints `replaced=[names]`.
    """
    kind, _, number = point.partition(":")
    target = int(number or 0)
    if kind in ("before-write", "before-request"):
        from agent.sandbox.transport import SandboxTransport

        original = SandboxTransport.handle_async_request
        seen = Counter[str]()

        async def handle(self: SandboxTransport, request: httpx.Request) -> httpx.Response:
            if kind == "before-request" or request.method != "GET":
                seen[kind] += 1
                if seen[kind] == target:
                    _die()
            return await original(self, request)

        SandboxTransport.handle_async_request = handle  # type: ignore[method-assign]
        return None
    real_replace = os.replace
    if kind in ("before-replace", "after-replace"):
        calls = [0]

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            calls[0] += 1
            if kind == "before-replace" and calls[0] == target:
                _die()
            real_replace(src, dst, **kwargs)
            if kind == "after-replace" and calls[0] == target:
                _die()

        os.replace = replace
        return None
    if kind == "count-replaces":
        names: list[str] = []

        def counting(src: Any, dst: Any, **kwargs: Any) -> None:
            names.append(Path(str(dst)).name)
            real_replace(src, dst, **kwargs)

        os.replace = counting
        return lambda: print(f"replaced={json.dumps(names)}", file=sys.stderr)
    raise SystemExit(f"unknown kill point {point!r}")


# ---- a fork server: the CLI in a child process without paying for its imports each time ----

def _run_child(request: Mapping[str, Any]) -> int:
    """In a forked child: the request's environment and output files, the kill point, the
    CLI; then `os._exit` with its code (no cleanup of the parent's state)."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        finish = _install_kill(request["point"]) if request.get("point") else None
        from agent.cli import main

        code = main(list(request["args"]))
        if finish is not None:
            finish()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork_server() -> int:
    """Serve one JSON request per stdin line: fork, run it, answer {"code": N}."""
    import agent.cli
    import agent.graph.connect
    import agent.runner
    import agent.sandbox
    import jobs  # noqa: F401

    agent.graph.connect._with_sdk_middleware(httpx.AsyncClient())  # the SDK's imports
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        out.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()
    return 0


class ForkServer:
    """A child Python with the agent imported that forks one process per CLI run."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen([str(PYTHON), "-m", "tests.helpers_hardening", "serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=clean_env(), cwd=ROOT)

    def run(self, *args: str, env: Mapping[str, str], point: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Like `subprocess.run` of the CLI (killed at `point`, if given)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        out = self.scratch / f"run-{id(self)}-{self.count}"
        request = {"args": list(args), "env": dict(env), "point": point,
                   "stdout": f"{out}.out", "stderr": f"{out}.err"}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the fork server died")
        code = int(json.loads(answer)["code"])
        stdout = Path(f"{out}.out").read_text(encoding="utf-8", errors="replace")
        stderr = Path(f"{out}.err").read_text(encoding="utf-8", errors="replace")
        return subprocess.CompletedProcess(list(args), code, stdout, stderr)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _main(argv: Sequence[str]) -> int:
    if argv[:1] == ["serve"]:
        return _fork_server()
    if len(argv) < 3 or argv[0] != "kill" or argv[2] != "--":
        print("usage: python -m tests.helpers_hardening kill POINT -- CLI-ARGS...\n"
              "       python -m tests.helpers_hardening serve", file=sys.stderr)
        return 2
    finish = _install_kill(argv[1])
    from agent.cli import main

    code = main(list(argv[3:]))
    if finish is not None:
        finish()
    return code


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))


__all__ = [
    "CLIENT_ID", "DAP_AGENT", "JOB_IDS", "NOW", "TENANT_ID", "FakeClock", "ForkServer",
    "MutatingTransport", "attempted_changes", "audit_entries", "change_outcomes",
    "check_retry_after_honoured", "clean_env", "cli", "deep_merge", "demo_config",
    "demo_config_data", "demo_settings", "demo_tenant", "device_actions", "files_under",
    "graph_client", "killed_cli", "modes_under", "normalise", "run_job_over", "runs_in_audit",
    "sandbox_transport", "tenant_state", "write_toml",
]
