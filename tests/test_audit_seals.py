"""Forward-secure seals: `audit init`, `verify --key`, consistent rewrites and a
compromised host's sealing state, crashes around an epoch change (issue #12, item 1, 7)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.audit import AuditBrokenError, AuditLog, entry_hash
from agent.audit import seal as seal_module
from agent.audit.entry import encode
from agent.audit.seal import load_state, parse_key
from agent.run import Run, Subject

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _run(log: AuditLog, changes: int = 3) -> Run:
    run = Run(audit=log, runs_dir=log.path.parent / "runs", job="offboarding", trigger="cli",
              dry_run=False, now=NOW)
    with run:
        for i in range(changes):
            with run.change("disable-user", Subject("user", f"u{i}"), "left") as change:
                change.done(request_id=f"req-{i}")
    return run


def _sealed(tmp_path: Path, runs: int = 3) -> tuple[AuditLog, bytes]:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    _run(log)  # history from before sealing began
    key = parse_key(log.init_sealing())
    for _ in range(runs):
        _run(log)
    return log, key


def _entries(log: AuditLog) -> list[dict]:
    return [json.loads(line) for line in log.path.read_bytes().splitlines()]


def _rewrite(log: AuditLog, entries: list[dict], key: bytes | None = None) -> None:
    """Write `entries` back as a consistent chain (seq, prev, hash recomputed; sealed
    with `key` when given, the seal dropped otherwise) and point the head at the end."""
    prev, lines = "0" * 64, []
    for seq, entry in enumerate(entries, start=1):
        entry = {k: v for k, v in entry.items() if k not in ("hash", "seal")}
        entry["seq"], entry["prev"] = seq, prev
        if key is None:
            entry.pop("epoch", None)
        line, prev = encode(entry, key)
        lines.append(line)
    log.path.write_bytes(b"".join(lines))
    log.head_path.write_text(json.dumps({"seq": len(entries), "hash": prev}))


def test_init_prints_the_key_last_and_stores_nothing_of_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from tests.conftest import CLIENT_ID, TENANT_ID, write_config

    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                          state_dir=str(tmp_path / "state"))
    assert main(["--config", str(config), "audit", "init"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("verification key: dapv1-")
    key_hex = parse_key(last.removeprefix("verification key: ")).hex()
    state = tmp_path / "state"
    for path in state.rglob("*"):
        if path.is_file():
            assert key_hex.encode() not in path.read_bytes(), path
    assert stat.S_IMODE((state / "audit.seal").stat().st_mode) == 0o600
    assert main(["--config", str(config), "audit", "init"]) == 2  # once only
    (tmp_path / "key.txt").write_text(last + "\n")
    assert main(["--config", str(config), "audit", "verify", "--key-file",
                 str(tmp_path / "key.txt")]) == 0
    assert "every seal valid" in capsys.readouterr().out


def test_every_entry_is_sealed_and_verifies_with_the_key(tmp_path: Path) -> None:
    log, key = _sealed(tmp_path)
    result = log.verify(key=key)
    assert result.ok and result.seals_checked, result.problem
    sealed = [e for e in _entries(log) if "seal" in e]
    assert sealed[0]["event"] == "seal-init" and sealed[0]["epoch"] == 0
    assert {e["epoch"] for e in sealed} == {0, 1, 2, 3}
    assert load_state(log.seal_path).epoch == 4  # the last run's epoch is closed
    without = log.verify()
    assert without.ok and not without.seals_checked


def test_a_consistent_rewrite_passes_the_chain_but_not_the_seals(tmp_path: Path) -> None:
    """The issue's attack: delete a whole enforce run, recompute chain and head with
    `entry_hash` (as a new user would, in plain json.dumps lines)."""
    log, key = _sealed(tmp_path)
    entries = _entries(log)
    first_run = next(e["run_id"] for e in entries if e.get("epoch") == 1 and "run_id" in e)
    kept = [e for e in entries if e.get("run_id") != first_run]
    prev = "0" * 64
    lines = []
    for seq, entry in enumerate(kept, start=1):
        entry = {**entry, "seq": seq, "prev": prev}
        entry.pop("hash")
        entry["hash"] = prev = entry_hash(entry)
        lines.append(json.dumps(entry).encode() + b"\n")
    log.path.write_bytes(b"".join(lines))
    log.head_path.write_text(json.dumps({"seq": len(kept), "hash": prev}))
    result = log.verify(key=key)
    assert not result.ok
    assert "seal of entry" in result.problem or "epoch" in result.problem


def test_compromise_today_s_sealing_state_cannot_rewrite_yesterday(tmp_path: Path) -> None:
    log, key = _sealed(tmp_path)
    stolen = load_state(log.seal_path)
    assert stolen is not None
    entries = _entries(log)
    # rewrite an action of the first sealed run (epoch 1) and re-seal everything from
    # there with the key the host holds now, keeping the epoch labels...
    target = next(i for i, e in enumerate(entries) if e.get("epoch") == 1
                  and e.get("status") == "done")
    entries[target]["reason"] = "approved by the customer"
    state = log.seal_path.read_bytes()
    _rewrite_sealed(log, entries, stolen.key, target)
    log.seal_path.write_bytes(state)
    result = log.verify(key=key)
    assert not result.ok and result.bad_line == target + 1 and "seal" in result.problem
    # ...or claiming today's epoch for the rewritten entries: the epoch ends are missing
    for entry in entries[target:]:
        entry["epoch"] = stolen.epoch
    _rewrite_sealed(log, entries, stolen.key, target)
    log.seal_path.write_bytes(state)
    for key_given in (key, None):
        result = log.verify(key=key_given)
        assert not result.ok and result.bad_line == target + 1
        assert "does not end it" in result.problem


def _rewrite_sealed(log: AuditLog, entries: list[dict], key: bytes, start: int) -> None:
    """Keep the lines before `start` as they are; rewrite the rest as a consistent chain
    sealed with `key`."""
    lines = log.path.read_bytes().splitlines(keepends=True)[:start]
    prev = entries[start - 1]["hash"]
    for entry in entries[start:]:
        body = {k: v for k, v in entry.items() if k not in ("hash", "seal")}
        body["prev"] = prev
        line, prev = encode(body, key if "epoch" in body else None)
        lines.append(line)
    log.path.write_bytes(b"".join(lines))
    log.head_path.write_text(json.dumps({"seq": entries[-1]["seq"], "hash": prev}))
    log.seal_path.write_bytes(b"")  # the attacker's copy of the state is all they have
    log.seal_path.unlink()


def test_cutting_whole_runs_off_is_given_away_by_the_sealing_epoch(tmp_path: Path) -> None:
    log, _ = _sealed(tmp_path)
    entries = _entries(log)
    last_epoch = max(e.get("epoch", -1) for e in entries)
    kept = [e for e in entries if e.get("epoch", -1) < last_epoch]
    log.path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in kept))
    log.head_path.write_text(json.dumps({"seq": kept[-1]["seq"], "hash": kept[-1]["hash"]}))
    result = log.verify()
    assert not result.ok and "entries were cut off the end" in result.problem
    with pytest.raises(AuditBrokenError):
        log.check()


def test_a_deleted_sealing_state_is_not_intact_and_stops_runs(tmp_path: Path) -> None:
    log, _ = _sealed(tmp_path, runs=1)
    log.seal_path.unlink()
    assert "audit.seal is missing" in log.verify().problem
    with pytest.raises(AuditBrokenError, match=r"audit\.seal is missing"):
        _run(log)


def test_an_old_copy_of_the_sealing_state_is_not_intact(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    key = parse_key(log.init_sealing())
    old = log.seal_path.read_bytes()
    _run(log)
    _run(log)  # (one epoch behind after a closer is a crash before the key evolved)
    log.seal_path.write_bytes(old)
    assert "behind the log" in log.verify().problem
    assert not log.verify(key=key).ok


def test_the_wrong_key_is_named(tmp_path: Path) -> None:
    log, _ = _sealed(tmp_path, runs=1)
    result = log.verify(key=b"\x01" * 32)
    assert not result.ok and "the log was sealed with key" in result.problem


def test_the_old_key_is_overwritten_when_the_epoch_ends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    log.init_sealing()
    before = load_state(log.seal_path)
    assert before is not None
    fd = os.open(log.seal_path, os.O_RDONLY)  # the old file, as someone who kept it open
    try:
        _run(log, changes=1)
        os.lseek(fd, 0, os.SEEK_SET)
        left = os.read(fd, 4096)
    finally:
        os.close(fd)
    assert left and set(left) == {0}
    assert load_state(log.seal_path).epoch == before.epoch + 1  # type: ignore[union-attr]


def test_a_crash_between_closing_an_epoch_and_evolving_the_key_verifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    key = parse_key(log.init_sealing())

    def killed(path: Path, state: object) -> None:
        raise SystemExit("killed before the new key was stored")

    monkeypatch.setattr("agent.audit.log.store_state", killed)
    with pytest.raises(SystemExit):
        _run(log, changes=1)
    monkeypatch.undo()
    assert log.verify(key=key).ok  # the closer is written, the key is still the old one
    _run(log, changes=1)  # the next append evolves first
    result = log.verify(key=key)
    assert result.ok, result.problem


def test_a_crash_inside_the_key_replacement_leaves_the_old_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    key = parse_key(log.init_sealing())
    real_replace = os.replace

    def die_on_seal(src: object, dst: object, **dir_fds: int) -> None:
        if str(dst).endswith("audit.seal"):
            raise SystemExit("killed before the rename")
        real_replace(src, dst, **dir_fds)  # type: ignore[arg-type]

    monkeypatch.setattr(seal_module.os, "replace", die_on_seal, raising=False)
    monkeypatch.setattr("agent.files.os.replace", die_on_seal)
    with pytest.raises(SystemExit):
        _run(log, changes=1)
    monkeypatch.undo()
    assert log.verify(key=key).ok
    _run(log, changes=1)
    assert log.verify(key=key).ok


def test_the_verifier_s_hmac_is_hmac_sha256() -> None:
    import hmac
    import secrets

    from agent.audit.seal import Sealer

    for size in (0, 1, 32, 64, 65, 100):
        key = secrets.token_bytes(size)
        message = secrets.token_bytes(32)
        assert Sealer(key).seal(message) == hmac.digest(key, message, "sha256")


def test_cutting_five_lines_and_rewriting_the_head_fails_once_sealed(tmp_path: Path) -> None:
    """The issue's truncation, on a sealed log: the cut always takes the last run's
    epoch-closed entry, and the sealing state (which cannot go back) is ahead of the log."""
    log, _ = _sealed(tmp_path, runs=2)
    lines = log.path.read_bytes().splitlines(keepends=True)[:-5]
    log.path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    log.head_path.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    result = log.verify()
    assert not result.ok and "sealing is at epoch" in result.problem
