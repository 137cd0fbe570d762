"""Monthly segments chained to each other, and `audit rotate` (issue #12, items 3 and 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.audit import AuditLog, entry_hash, parse_checkpoint
from agent.audit import log as audit_log_module
from agent.audit.seal import parse_key
from agent.errors import UsageError

MONTHS = ("2026-09", "2026-10", "2026-11")


def _months(tmp_path: Path, per_month: int = 4,
            sealed: bool = False) -> tuple[AuditLog, bytes | None]:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    key = None
    for month in MONTHS:
        for day in range(1, per_month + 1):
            log.append({"ts": f"{month}-{day:02d}T08:00:00.000Z", "event": "action", "n": day})
            if sealed and key is None:
                key = parse_key(log.init_sealing())
            if sealed:
                log.end_epoch()
    return log, key


def test_a_new_month_starts_a_new_segment_and_verify_walks_them_all(tmp_path: Path) -> None:
    log, _ = _months(tmp_path)
    segments = sorted(p.name for p in log.segments_dir.iterdir())
    assert segments == ["000000000001-2026-09.jsonl", "000000000005-2026-10.jsonl"]
    assert [json.loads(line)["ts"][:7] for line in log.path.read_bytes().splitlines()] \
        == ["2026-11"] * 4
    result = log.verify()
    assert result.ok and result.entries == 12
    assert [e["seq"] for e in log.entries()] == list(range(1, 13))
    first = next(log.entries())
    assert log.verify(checkpoints=[(1, first["hash"])]).ok


def test_a_rewritten_earlier_segment_breaks_the_chain_at_the_next(tmp_path: Path) -> None:
    log, _ = _months(tmp_path)
    september = log.segments_dir / "000000000001-2026-09.jsonl"
    entries = [json.loads(line) for line in september.read_bytes().splitlines()]
    entries[2]["n"] = 99
    prev = entries[1]["hash"]
    for entry in entries[2:]:
        entry["prev"] = prev
        entry.pop("hash")
        entry["hash"] = prev = entry_hash(entry)
    september.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
    result = log.verify()
    assert not result.ok and result.file == log.segments_dir / "000000000005-2026-10.jsonl"
    assert result.bad_line == 1 and "previous-hash" in result.problem


def test_a_consistently_rewritten_earlier_segment_fails_the_seals(tmp_path: Path) -> None:
    log, key = _months(tmp_path, sealed=True)
    files = log.files()
    lines = [line for path in files for line in path.read_bytes().splitlines()]
    entries = [json.loads(line) for line in lines]
    entries[2]["n"] = 99  # in September, re-chained to the end (seals kept: no key for them)
    prev = entries[1]["hash"]
    for entry in entries[2:]:
        entry["prev"] = prev
        entry.pop("hash")
        entry["hash"] = prev = entry_hash(entry)
    by_file: dict[Path, list[bytes]] = {}
    index = 0
    for path in files:
        count = len(path.read_bytes().splitlines())
        by_file[path] = [json.dumps(e).encode() + b"\n" for e in entries[index:index + count]]
        index += count
    for path, new in by_file.items():
        path.write_bytes(b"".join(new))
    log.head_path.write_text(json.dumps({"seq": entries[-1]["seq"], "hash": prev}))
    assert log.verify().ok  # without the key a consistent rewrite passes the chain
    result = log.verify(key=key)
    assert not result.ok and "seal of entry 3 " in result.problem


def test_a_swapped_segment_is_detected(tmp_path: Path) -> None:
    log, _ = _months(tmp_path)
    one, two = sorted(log.segments_dir.iterdir())
    data_one, data_two = one.read_bytes(), two.read_bytes()
    one.write_bytes(data_two)
    two.write_bytes(data_one)
    result = log.verify()
    assert not result.ok and result.file == one and "sequence 5 where 1 expected" in result.problem


def test_a_deleted_earlier_segment_is_detected(tmp_path: Path) -> None:
    log, _ = _months(tmp_path)
    sorted(log.segments_dir.iterdir())[0].unlink()
    result = log.verify()
    assert not result.ok and "sequence 5 where 1 expected" in result.problem


def test_a_crash_right_after_moving_a_segment_verifies_and_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    log.append({"ts": "2026-10-31T23:00:00.000Z", "event": "x"})

    def killed(line: bytes) -> None:
        raise SystemExit("killed after the segment was moved")

    monkeypatch.setattr(log, "_write_line", killed)
    with pytest.raises(SystemExit):
        log.append({"ts": "2026-11-01T00:10:00.000Z", "event": "x"})
    monkeypatch.undo()
    assert not log.path.exists() and log.verify().ok
    log.append({"ts": "2026-11-01T00:11:00.000Z", "event": "x"})
    assert log.verify().ok and log.verify().entries == 2


# ---- rotate ------------------------------------------------------------------------------

def test_rotate_refuses_an_intact_log(tmp_path: Path) -> None:
    log, _ = _months(tmp_path, per_month=1)
    with pytest.raises(UsageError, match="intact"):
        log.rotate("tidy up")


def test_rotate_moves_a_broken_log_aside_and_records_head_break_and_reason(
        tmp_path: Path) -> None:
    log, _ = _months(tmp_path, per_month=2, sealed=True)
    head = json.loads(log.head_path.read_bytes())
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(lines[0].replace(b'"ts":"', b'"ts":"1', 1) + b"".join(lines[1:]))
    with pytest.raises(audit_log_module.AuditBrokenError):
        log.check()  # what every run does first
    aside, first = log.rotate("line edited on the host; investigated in INC-42")
    assert first["seq"] == 1 and first["event"] == "audit-rotated"
    assert first["old_head"] == head
    assert first["break"]["line"] == 1 and "edited" in first["break"]["problem"]
    assert first["reason"].startswith("line edited")
    assert {p.name for p in aside.iterdir()} >= {"audit.jsonl", "audit.head", "audit.seal",
                                                "audit-segments"}
    assert log.verify().ok and log.verify().entries == 1
    log.append({"event": "x"})  # runs go on, on the new chain
    assert parse_checkpoint(log.checkpoint())[0] == 2
    key = parse_key(log.init_sealing())  # and it can be sealed anew
    assert log.verify(key=key).ok


def test_cli_rotate_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from tests.conftest import CLIENT_ID, TENANT_ID, write_config

    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                          state_dir=str(tmp_path / "state"))
    log, _ = _months(tmp_path, per_month=1)
    os.truncate(log.path, 0)
    assert main(["--config", str(config), "audit", "verify"]) == 1
    assert "NOT intact" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["--config", str(config), "audit", "rotate"])  # --reason is required
    assert usage.value.code == 2
    assert main(["--config", str(config), "audit", "rotate", "--reason", "disk restored"]) == 0
    out = capsys.readouterr().out
    assert "moved the broken log aside" in out and "new chain started" in out
    assert main(["--config", str(config), "audit", "verify"]) == 0
