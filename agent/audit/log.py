"""`AuditLog`: append (chained, sealed, all or nothing), check, verify, checkpoint, read.

Files, all next to the log in the state directory:
- `audit.jsonl`                 the current segment (this month's entries)
- `audit-segments/<seq>-<YYYY-MM>.jsonl`  earlier months, named by their first entry
- `audit.head`                  seq and hash of the last entry (cutting the end is detected)
- `audit.seal`                  the current epoch's sealing key (after `audit init`)
- `audit.lock`                  serialises writers (daemon and CLI)
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.audit.attest import Recorded, report_problems
from agent.audit.entry import GENESIS, encode, parse, utc_now_iso
from agent.audit.seal import (
    SealState,
    SealStateError,
    evolve,
    key_id,
    key_text,
    load_state,
    new_key,
    next_state,
    store_state,
)
from agent.audit.verify import CLOSERS, VerifyResult, Walk
from agent.errors import EXIT_INTERNAL, DapError, UsageError
from agent.files import (
    exclusive_lock,
    fsync_directory,
    make_private_dirs,
    open_state_file,
    open_state_reader,
    read_state_bytes,
    write_atomic,
)


class AuditBrokenError(DapError):
    """The log fails its chain check: nothing may be appended (exit 1)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, result: VerifyResult) -> None:
        self.result = result
        super().__init__(result.message() + "; no change was made. See `dap-agent audit "
                         "verify`; once investigated, `dap-agent audit rotate --reason TEXT` "
                         "starts a new chain")


class AuditWriteError(DapError):
    """An append could not be written completely (full disk, I/O error): the run stops."""

    exit_code = EXIT_INTERNAL


@dataclass(frozen=True)
class Tail:
    seq: int
    hash: str
    epoch: int | None
    closes: bool
    ts: str | None
    prev: str = GENESIS


EMPTY = Tail(0, GENESIS, None, False, None)


def parse_checkpoint(text: str) -> tuple[int, str]:
    seq, _, digest = text.strip().partition(":")
    digest = digest.lower()
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UsageError(f"--checkpoint {text!r}: expected SEQ:HASH (a number, a colon and the "
                         "64 hex digits of that entry's hash), as run reports carry it")
    return int(seq), digest


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_suffix(".head")
        self.lock_path = path.with_suffix(".lock")
        self.seal_path = path.with_suffix(".seal")
        self.segments_dir = path.parent / f"{path.stem}-segments"

    # ---- reading -----------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Every segment in chain order, the current one last (when it exists)."""
        segments = sorted(self.segments_dir.glob("*.jsonl")) if self.segments_dir.is_dir() else []
        return segments + ([self.path] if self.path.exists() else [])

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            with open_state_reader(path) as fh:
                for raw in fh:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(entry, dict):
                        yield entry

    def checkpoint(self) -> str:
        """`SEQ:HASH` of the last entry ("0:" + GENESIS while the log is empty)."""
        tail = self._read_tail()[0]
        return f"{tail.seq}:{tail.hash}"

    # ---- checking ----------------------------------------------------------------------

    def verify(self, key: bytes | None = None, checkpoints: Iterable[tuple[int, str]] = (),
               on_entry: Callable[[dict[str, Any]], None] | None = None,
               allow_empty: bool = False) -> VerifyResult:
        """Walk everything: chain, epochs (and seals with `key`), head, sealing state,
        checkpoints. A missing state directory or log is not intact (unless `allow_empty`:
        a run's check of a state where no entry was ever written)."""
        walk = Walk(key=key, checkpoints=dict(checkpoints), on_entry=on_entry)
        result = walk.result
        state_dir = self.path.parent
        if not state_dir.is_dir():
            result.ok, result.problem = False, f"state directory {state_dir} does not exist"
            return result
        head = self._read_head()
        files = self.files()
        if not files:
            fresh = head is None or head == (0, GENESIS)
            if allow_empty and fresh and self.seal_path.exists():
                walk.finish_seal_state(None, self.seal_path)  # an init killed half-way
            elif not (allow_empty and fresh):
                result.ok, result.file = False, self.path
                recorded = f" (audit.head records {head[0]} entries)" if head else ""
                result.problem = f"the audit log is missing{recorded}"
            return result
        walk.run(files)
        if result.ok:
            self._check_head(result, head)
        if result.ok:
            try:
                state = load_state(self.seal_path)
            except SealStateError as exc:
                result.ok, result.problem, result.file = False, str(exc), self.seal_path
            else:
                walk.finish_seal_state(state, self.seal_path)
        walk.finish_checkpoints()
        return result

    def verify_all(self, key: bytes | None = None,
                   checkpoints: Iterable[tuple[int, str]] = ()) -> VerifyResult:
        """`audit verify`: `verify` plus every stored run report against its recorded
        checksum."""
        recorded = Recorded()
        result = self.verify(key=key, checkpoints=checkpoints, on_entry=recorded)
        if result.ok:
            problems = report_problems(recorded, self.path.parent / "runs")
            if problems:
                result.ok, result.problem = False, problems[0]
                result.file, result.bad_line = None, None
                result.notes.extend(problems[1:])
            else:
                result.notes.append(f"{len(recorded.reports)} run reports match the log "
                                    f"({len(recorded.pruned_reports)} removed by retention)")
        return result

    def delivery(self, month: str) -> dict[str, Any] | None:
        """The last `month-delivered` entry of `month`, or None (read on a broken log too)."""
        found = None
        for path in self.files():
            with open_state_reader(path) as fh:
                for raw in fh:
                    if b'"event":"month-delivered"' in raw:
                        try:
                            entry = json.loads(raw)
                        except ValueError:
                            continue
                        if entry.get("event") == "month-delivered" and entry.get("month") == month:
                            found = entry
        return found

    def check(self) -> VerifyResult:
        """The chain check before a run: raise AuditBrokenError when the log fails it."""
        if not self.path.parent.is_dir():
            return VerifyResult(True, 0)
        with exclusive_lock(self.lock_path):
            result = self.verify(allow_empty=True)
        if not result.ok:
            raise AuditBrokenError(result)
        return result

    def _check_head(self, result: VerifyResult, head: tuple[int, str] | str | None) -> None:
        seq, name = result.last_seq, self.head_path.name
        if head is None:
            result.ok, result.file = False, self.head_path
            result.problem = (f"{name} is missing (it records the last entry; the log has "
                              f"{seq} entries): it was deleted")
        elif isinstance(head, str):
            result.ok, result.file, result.problem = False, self.head_path, head
        elif head == (seq, result.last_hash):
            pass
        elif head == (seq - 1, result.last_prev):
            result.notes.append(f"{name} is one entry behind (a crash between an append and "
                                "its head update): the next append brings it up to date")
        elif head[0] > seq and result.torn_at is not None:
            result.ok = False
            result.file, result.bad_line = result.torn_at
            result.problem = (f"line is cut off (no newline) but {name} records entry "
                              f"{head[0]} as written: the log was truncated")
        elif head[0] > seq:
            result.ok, result.file, result.bad_line = False, self.head_path, None
            result.problem = (f"the log ends at entry {seq} but {name} records {head[0]}: "
                              "entries were cut off the end")
        else:
            result.ok, result.file = False, self.head_path
            result.problem = (f"{name} (entry {head[0]}) does not match the log's last entry "
                              f"({seq}): the log or the head was rewritten")

    def _read_head(self) -> tuple[int, str] | str | None:
        """(seq, hash), None when missing, or a problem text when unreadable."""
        try:
            head = json.loads(read_state_bytes(self.head_path))
            return int(head["seq"]), str(head["hash"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return f"{self.head_path.name} is unreadable"

    # ---- writing -----------------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Chain, seal, write, fsync one entry; return it as written. Raises
        AuditBrokenError when the end of the log does not check, AuditWriteError when the
        entry could not be written (nothing of it is left in the log then)."""
        with exclusive_lock(self.lock_path):
            tail = self._tail_for_append()
            state = self._sealing(tail)
            return self._write_entry(tail, entry, state)[0]

    def end_epoch(self) -> None:
        """End the sealing epoch (after each run): an `epoch-closed` entry under the
        current key, then the key evolves and the old one is destroyed."""
        with exclusive_lock(self.lock_path):
            tail = self._tail_for_append()
            state = self._sealing(tail)
            if state is None:
                return
            self._write_entry(tail, {"event": "epoch-closed"}, state)
            store_state(self.seal_path, next_state(state))

    def init_sealing(self) -> str:
        """Start sealing: the seal-init entry under k_0, the state at epoch 1. Returns the
        verification key's text (k_0), which is not stored anywhere."""
        make_private_dirs(self.path.parent)
        with exclusive_lock(self.lock_path):
            result = self.verify(allow_empty=True)
            if result.sealed_from is not None:
                raise UsageError(f"the audit log is sealed already (since entry "
                                 f"{result.sealed_from}, key {result.key_id}); its "
                                 "verification key was printed by that `audit init`")
            if not result.ok and not (result.file == self.seal_path and self.seal_path.exists()):
                raise AuditBrokenError(result)
            tail = self._tail_for_append()
            k0 = new_key()
            store_state(self.seal_path, SealState(1, evolve(k0), key_id(k0)))
            self._write_entry(tail, {"event": "seal-init", "key_id": key_id(k0),
                                     "epochs": "an epoch ends with every run",
                                     "by": _who()}, SealState(0, k0, key_id(k0)))
            return key_text(k0)

    def rotate(self, reason: str) -> tuple[Path, dict[str, Any]]:
        """Move a broken log (segments, head, sealing state) aside into
        `audit-broken-<time>/` and start a new chain whose first entry records the old
        head, the break and the reason."""
        if not reason.strip():
            raise UsageError("--reason: say why the log is rotated (it is recorded)")
        with exclusive_lock(self.lock_path):
            result = self.verify(allow_empty=True)
            if result.ok:
                raise UsageError(f"the audit log is intact ({result.entries} entries): "
                                 "nothing to rotate")
            head = self._read_head()
            moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = self.path.parent / f"{self.path.stem}-broken-{moment}"
            make_private_dirs(aside)
            for path in (self.path, self.head_path, self.seal_path, self.segments_dir):
                if path.exists():
                    os.replace(path, aside / path.name)
            fsync_directory(aside)
            fsync_directory(self.path.parent)
            first = {"event": "audit-rotated", "reason": reason, "by": _who(),
                     "old_head": ({"seq": head[0], "hash": head[1]}
                                  if isinstance(head, tuple) else None),
                     "old_last_intact": {"seq": result.last_seq, "hash": result.last_hash},
                     "break": {"file": str(result.file) if result.file else None,
                               "line": result.bad_line, "problem": result.problem},
                     "moved_to": str(aside)}
            write_atomic(self.head_path, _head_bytes(0, GENESIS))  # before the first line
            record = self._write_entry(EMPTY, first, None)[0]
            return aside, record

    # ---- internals ---------------------------------------------------------------------

    def _read_tail(self) -> tuple[Tail, Path | None, int, bytes]:
        """The last complete entry, the file it is in, where that file's complete lines
        end, and any torn bytes after them."""
        torn_in: tuple[Path, bytes] | None = None  # a file holding nothing but a torn line
        for path in reversed(self.files()):
            with open_state_reader(path) as fh:
                size = fh.seek(0, os.SEEK_END)
                if size == 0:
                    continue
                block, data, pos = 8192, b"", size
                while pos > 0:
                    step = min(block, pos)
                    pos -= step
                    fh.seek(pos)
                    data = fh.read(step) + data
                    if data.count(b"\n") >= 2 or pos == 0:
                        break
                    block *= 2
            end = data.rfind(b"\n")
            torn = data[end + 1:]
            complete = data[:end + 1]
            if not complete:
                if path != self.path:
                    raise AuditBrokenError(VerifyResult(
                        False, 0, 1, "line is cut off (no newline)", path))
                torn_in = (path, torn)
                continue
            if torn_in is not None:
                path, torn, size = torn_in[0], torn_in[1], len(torn_in[1])
            last = complete[complete.rfind(b"\n", 0, len(complete) - 1) + 1:]
            p = parse(last)
            if p.problem or not p.hash_ok:
                why = p.problem or "hash does not match the content"
                raise AuditBrokenError(VerifyResult(
                    False, 0, None, f"the last entry does not check ({why})", path))
            ts, closes = None, False
            try:
                decoded = json.loads(last)
                ts, closes = decoded.get("ts"), decoded.get("event") in CLOSERS
            except ValueError:
                pass
            return Tail(p.seq, p.hash, p.epoch, closes, ts, p.prev), path, size - len(torn), torn
        if torn_in is not None:
            return EMPTY, torn_in[0], 0, torn_in[1]
        return EMPTY, None, 0, b""

    def _tail_for_append(self) -> Tail:
        tail, path, end, torn = self._read_tail()
        head = self._read_head()
        problem = ""
        if isinstance(head, str):
            problem = head
        elif head is None and tail.seq > 0:
            problem = f"{self.head_path.name} is missing (the log has entries): it was deleted"
        elif head is not None and head[0] > tail.seq and path is None:
            problem = f"the audit log is missing ({self.head_path.name} records {head[0]} entries)"
        elif head is not None and head not in ((tail.seq, tail.hash), (tail.seq - 1, tail.prev)):
            problem = (f"{self.head_path.name} (entry {head[0]}) does not match the log's last "
                       f"entry ({tail.seq})")
        if problem:
            raise AuditBrokenError(VerifyResult(False, tail.seq, None, problem, self.path))
        if head is None:  # a new log: the head exists before the first line does
            write_atomic(self.head_path, _head_bytes(0, GENESIS))
        if torn and path is not None:
            tail = self._cut_torn(tail, path, end, torn)
        return tail

    def _cut_torn(self, tail: Tail, path: Path, end: int, torn: bytes) -> Tail:
        """A torn last line (never completed, so no change followed it): cut it off and
        record what was removed."""
        fd = open_state_file(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        finally:
            os.close(fd)
        state = self._sealing(tail)
        repair = {"event": "audit-repaired", "file": path.name, "removed_bytes": len(torn),
                  "removed_sha256": hashlib.sha256(torn).hexdigest(),
                  "reason": "a torn last line (an interrupted write) was cut off"}
        return self._write_entry(tail, repair, state)[1]

    def _sealing(self, tail: Tail) -> SealState | None:
        """The state to seal the next entry with (None: the log is not sealed)."""
        if tail.epoch is None:
            return None
        try:
            state = load_state(self.seal_path)
        except SealStateError as exc:
            raise AuditBrokenError(VerifyResult(False, tail.seq, None, str(exc),
                                                self.seal_path)) from None
        if state is None:
            raise AuditBrokenError(VerifyResult(
                False, tail.seq, None, f"sealing state {self.seal_path.name} is missing (the "
                "log is sealed): it was deleted", self.seal_path))
        if tail.closes and state.epoch == tail.epoch:  # killed between closing and evolving
            state = next_state(state)
            store_state(self.seal_path, state)
        expected = tail.epoch + 1 if tail.closes else tail.epoch
        if state.epoch != expected:
            raise AuditBrokenError(VerifyResult(
                False, tail.seq, None, f"sealing state is at epoch {state.epoch} but the log's "
                f"last entry needs epoch {expected}", self.seal_path))
        return state

    def _write_entry(self, tail: Tail, entry: dict[str, Any],
                     state: SealState | None) -> tuple[dict[str, Any], Tail]:
        entry = dict(entry)
        ts = entry.pop("ts", None) or utc_now_iso()
        self._roll_segment(tail, ts)
        record: dict[str, Any] = {"seq": tail.seq + 1, "prev": tail.hash}
        if state is not None:
            record["epoch"] = state.epoch
        record.update({"ts": ts, **{k: v for k, v in entry.items()
                                   if k not in ("seq", "prev", "epoch", "hash", "seal")}})
        line, digest = encode(record, state.key if state is not None else None)
        self._write_line(line)
        write_atomic(self.head_path, _head_bytes(record["seq"], digest))
        record["hash"] = digest
        if state is not None:
            record["seal"] = json.loads(line)["seal"]
        closes = record.get("event") in CLOSERS
        return record, Tail(record["seq"], digest, record.get("epoch"), closes, ts)

    def _roll_segment(self, tail: Tail, ts: str) -> None:
        """A new month starts a new segment: the current file moves to audit-segments/."""
        if tail.ts is None or tail.ts[:7] == ts[:7] or not self.path.exists():
            return
        with open_state_reader(self.path) as fh:
            first = parse(fh.readline())
        if first.problem:
            return
        make_private_dirs(self.segments_dir)
        target = self.segments_dir / f"{first.seq:012d}-{tail.ts[:7]}.jsonl"
        os.replace(self.path, target)
        fsync_directory(self.segments_dir)
        fsync_directory(self.path.parent)

    def _write_line(self, line: bytes) -> None:
        """All of the line or none of it: a short write is continued, a failed one undone."""
        make_private_dirs(self.path.parent)
        fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        start = 0
        try:
            start = os.fstat(fd).st_size
            view = memoryview(line)
            while view:
                view = view[_write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                pass  # left torn: the next append cuts it off and records it
            raise AuditWriteError(f"cannot write the audit log {self.path}: "
                                  f"{exc.strerror or exc}; the run stops before its next "
                                  "change") from None
        finally:
            os.close(fd)


def _write(fd: int, data: memoryview) -> int:
    return os.write(fd, data)


def _head_bytes(seq: int, digest: str) -> bytes:
    return json.dumps({"seq": seq, "hash": digest}).encode()


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
