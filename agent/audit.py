"""The tamper-evident audit log: append-only JSONL with a SHA-256 hash chain.

Each line is a JSON object with `seq`, `prev` (the previous line's hash) and `hash`
(SHA-256 over `prev` and the canonical JSON of the entry without `hash`). Every append is
flushed and fsynced before the caller makes its next change. A small head file
(`audit.head`) remembers the last seq and hash, so cutting entries off the end is
detected too. Appends from the daemon and a CLI run are serialised by an flock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.files import exclusive_lock, write_atomic

GENESIS = "0" * 64


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    bad_line: int | None = None
    problem: str = ""


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_suffix(".head")
        self.lock_path = path.with_suffix(".lock")

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Chain, write, flush and fsync one entry; return it as written."""
        with exclusive_lock(self.lock_path):
            seq, prev = self._last()
            record = {"seq": seq + 1, "ts": entry.pop("ts", None) or utc_now_iso(), **entry,
                      "prev": prev}
            record["hash"] = entry_hash(record)
            line = canonical(record) + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            write_atomic(self.head_path, json.dumps({"seq": record["seq"],
                                                     "hash": record["hash"]}).encode())
        return record

    def _last(self) -> tuple[int, str]:
        line = _last_line(self.path)
        if line is None:
            return 0, GENESIS
        try:
            last = json.loads(line)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            # a torn last line (crash mid-write): chain onto it anyway; verify reports it
            return -1, hashlib.sha256(line).hexdigest()

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue

    def verify(self) -> VerifyResult:
        if not self.path.exists():
            return VerifyResult(ok=True, entries=0)
        prev = GENESIS
        seq = 0
        last_hash = GENESIS
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    return VerifyResult(False, number - 1, number, "line is cut off (no newline)")
                try:
                    entry = json.loads(raw)
                except ValueError:
                    return VerifyResult(False, number - 1, number, "line is not valid JSON")
                if not isinstance(entry, dict):
                    return VerifyResult(False, number - 1, number, "line is not a JSON object")
                if entry.get("seq") != seq + 1:
                    return VerifyResult(False, number - 1, number,
                                        f"sequence {entry.get('seq')} where {seq + 1} expected "
                                        "(an entry was removed or reordered)")
                if entry.get("prev") != prev:
                    return VerifyResult(False, number - 1, number,
                                        "previous-hash does not match the line before")
                if entry.get("hash") != entry_hash(entry):
                    return VerifyResult(False, number - 1, number,
                                        "hash does not match the content (the line was edited)")
                prev = last_hash = entry["hash"]
                seq += 1
        return self._check_head(seq, last_hash)

    def _check_head(self, seq: int, last_hash: str) -> VerifyResult:
        try:
            head = json.loads(self.head_path.read_bytes())
        except FileNotFoundError:
            return VerifyResult(True, seq)
        except ValueError:
            return VerifyResult(False, seq, None, f"{self.head_path.name} is not valid JSON")
        head_seq = head.get("seq")
        if head_seq == seq and head.get("hash") == last_hash:
            return VerifyResult(True, seq)
        if head_seq == seq - 1:
            return VerifyResult(True, seq)  # crash between the append and the head update
        if isinstance(head_seq, int) and head_seq > seq:
            return VerifyResult(False, seq, seq + 1,
                                f"log ends at entry {seq} but {head_seq} were written "
                                "(entries were cut off the end)")
        return VerifyResult(False, seq, None, "head file does not match the last entry")


def _last_line(path: Path) -> bytes | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            if end == 0:
                return None
            block = 4096
            pos = end
            data = b""
            while pos > 0:
                step = min(block, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
                stripped = data.rstrip(b"\n")
                if b"\n" in stripped:
                    return stripped.rsplit(b"\n", 1)[1]
            return data.rstrip(b"\n") or None
    except FileNotFoundError:
        return None
