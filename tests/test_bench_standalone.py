"""bench/ runs after the README's first command, without pytest (issue 14.13), and a large
sandbox tenant is one documented command (`dap-agent demo --users N --devices N`)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_PYTEST = ("import runpy, sys\n"
                  "sys.modules['pytest'] = None; sys.modules['tests'] = None\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_no_bench_script_imports_the_test_suite(script: str) -> None:
    tree = ast.parse((ROOT / "bench" / script).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"tests", "pytest", "respx", "hypothesis"}, script


def test_a_bench_runs_with_pytest_unimportable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST, "bench/bench_active_users.py", "--users", "200",
         "--no-profile", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    document = result.stdout[result.stdout.index("{\n"):]  # after any log lines
    assert json.loads(document)["users"] == 200


def test_demo_generates_a_tenant_of_the_given_size_and_every_job_runs_on_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from agent.sandbox.tenant import SandboxTenant

    assert main(["demo", "--dir", str(tmp_path / "big"), "--users", "60", "--devices",
                 "80"]) == 0
    out = capsys.readouterr().out
    for job in ("active-users", "offboarding", "device-compliance", "privileged-roles"):
        assert f"{job}: ok" in out, out
    tenant = SandboxTenant.load(tmp_path / "big" / "tenant.json")
    assert len(tenant.collections["users"]) >= 60
    assert len(tenant.collections["managedDevices"]) == 80
    with pytest.raises(SystemExit) as usage:
        main(["demo", "--dir", str(tmp_path / "x"), "--users", "-5"])
    assert usage.value.code == 2
