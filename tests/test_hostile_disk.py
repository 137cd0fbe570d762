"""Issue 15 item 6: a full disk names the path that is full and what was not done, and the
run still ends with a `run-failed` audit entry when the audit log can be written."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent import files
from tests.test_hostile_files import config_for, run


def fill_disk_below(monkeypatch: pytest.MonkeyPatch, *dirs: str) -> None:
    """ENOSPC for every file replaced in one of `dirs` (the audit log's own dir has room)."""
    real = files._replace_in

    def full(dfd: int, path: Path, chunks: Iterable[bytes]) -> str:
        if path.parent.name in dirs:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(dfd, path, chunks)

    monkeypatch.setattr(files, "_replace_in", full)


def audit_events(state: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state / "audit.jsonl").read_bytes().splitlines()]


def test_a_full_disk_names_the_file_and_what_was_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    config = config_for(tmp_path, monkeypatch, state)
    fill_disk_below(monkeypatch, "exports", "runs")
    assert run(config, "--final", "--json") == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "internal error" not in out.err
    export = state / "exports" / "active-users-2026-05.csv"
    assert f"{export}: no space left" in out.err and "it was not written" in out.err
    assert json.loads(out.out)["status"] == "failed"  # --json: the report is still printed
    last = audit_events(state)[-1]
    assert last["event"] == "run-failed"
    assert "no space left" in str(last["error"]) and "run report was not stored" in str(
        last["error"])
    assert last["report_path"] is None


def test_a_run_whose_report_cannot_be_stored_fails_audited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    config = config_for(tmp_path, monkeypatch, state)
    fill_disk_below(monkeypatch, "runs")
    assert run(config) == 1
    err = capsys.readouterr().err
    assert str(state / "runs") in err and "no space left" in err
    last = audit_events(state)[-1]
    assert last["event"] == "run-failed" and "run report was not stored" in str(last["error"])


def test_a_full_disk_on_the_ledger_names_it(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import ledger as ledger_module
    from agent.errors import DiskFullError
    from agent.ledger import Ledger

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "offboarding-ledger.jsonl"
    book = Ledger.open(path)
    monkeypatch.setattr(ledger_module.os, "write", full)
    with pytest.raises(DiskFullError, match=f"{path}: no space left.*ledger entry was not "
                                            "written"):
        book._append(b'{"x": 1}\n')
