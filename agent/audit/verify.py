"""Walking the log: the chain, the epochs and seals, the head and the sealing state.

One pass over every segment, line by line, in `entry.parse`'s fast path; only the few lines
that matter beyond the chain (epoch ends, run reports, deliveries) are decoded as JSON.
"""

from __future__ import annotations

import json
from binascii import hexlify
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.audit.entry import GENESIS, BadLine, scan
from agent.audit.seal import Sealer, SealState, evolve, key_id
from agent.files import open_state_reader

CLOSERS = ("seal-init", "epoch-closed")  # events that end their epoch
# `on_entry` sees the entries with a checksum (run-finished: report_sha256,
# month-delivered: export_sha256) or of retention, decoded; two substring searches are
# far cheaper than one regex with alternatives over every line
_CHECKSUM, _RETENTION = b'_sha256":"', b'"event":"retention-pruned"'


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    bad_line: int | None = None
    problem: str = ""
    file: Path | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    last_prev: str = GENESIS
    last_epoch: int | None = None
    last_closes: bool = False
    sealed_from: int | None = None  # seq of the seal-init entry
    key_id: str | None = None
    seals_checked: bool = False
    torn_bytes: int = 0
    torn_at: tuple[Path, int] | None = None  # file and line number of a torn last line
    notes: list[str] = field(default_factory=list)

    def where(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file} line {self.bad_line}: " if self.bad_line else f"{self.file}: "

    def message(self) -> str:
        return f"audit log not intact: {self.where()}{self.problem}"


class Broken(Exception):
    def __init__(self, problem: str, file: Path | None = None, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.file, self.line = problem, file, line


@dataclass
class Walk:
    """The chain check over the log's files, in order; `key` checks every seal too."""

    key: bytes | None = None
    checkpoints: dict[int, str] = field(default_factory=dict)
    on_entry: Callable[[dict[str, Any]], None] | None = None  # interesting entries, decoded
    result: VerifyResult = field(default_factory=lambda: VerifyResult(True, 0))
    _key: bytes | None = None  # the current epoch's key while walking with `key`
    _closes_raw: bytes | None = None  # the last sealed line (decoded only at an epoch step)

    def run(self, files: Sequence[Path]) -> VerifyResult:
        r = self.result
        try:
            for index, path in enumerate(files):
                self._file(path, last=index == len(files) - 1)
        except Broken as exc:
            r.ok, r.problem, r.file, r.bad_line = False, exc.problem, exc.file, exc.line
        return r

    def _file(self, path: Path, last: bool) -> None:
        """The hot loop (a million lines in seconds): locals only, bytes only."""
        r = self.result
        seq, prev, epoch = r.last_seq, r.last_hash.encode(), r.last_epoch
        before = r.last_prev.encode()
        key, closes_raw = self._key, self._closes_raw
        sealer = Sealer(key) if key is not None else None
        checkpoints = {s: d.encode() for s, d in self.checkpoints.items()}
        on_entry = self.on_entry
        number = 0
        try:
            with open_state_reader(path) as fh:
                for number, raw in enumerate(fh, start=1):
                    if raw[-1:] != b"\n":
                        if last:
                            r.torn_bytes, r.torn_at = len(raw), (path, number)
                            r.notes.append(f"{path} ends in a torn line ({len(raw)} bytes, "
                                           "an interrupted write): the next run cuts it off "
                                           "and records what it removed")
                            break
                        raise Broken("line is cut off (no newline)", path, number)
                    try:
                        n, p_prev, digest, hash_ok, p_epoch, seal, raw_digest = scan(raw)
                    except BadLine as exc:
                        raise Broken(str(exc), path, number) from None
                    if n != seq + 1:
                        raise Broken(f"sequence {n} where {seq + 1} expected (an entry was "
                                     "removed or reordered)", path, number)
                    if p_prev != prev:
                        raise Broken("previous-hash does not match the entry before", path,
                                     number)
                    if not hash_ok:
                        raise Broken("hash does not match the content (the entry was edited)",
                                     path, number)
                    if p_epoch is not None or epoch is not None:
                        if p_epoch != epoch:
                            key = self._epoch_step(raw, closes_raw, epoch, p_epoch, key, path,
                                                   number, n)
                            sealer = Sealer(key) if key is not None else None
                            epoch = p_epoch
                        if sealer is not None and hexlify(sealer.seal(raw_digest)) != seal:
                            raise Broken(f"seal of entry {n} (epoch {p_epoch}) does not match: "
                                         "the entry was written or rewritten without that "
                                         "epoch's key", path, number)
                        closes_raw = raw
                    if checkpoints and n in checkpoints and checkpoints[n] != digest:
                        raise Broken(f"entry {n} differs from the checkpoint {n}:"
                                     f"{checkpoints[n].decode()} (its hash is "
                                     f"{digest.decode()})", path, number)
                    if on_entry is not None and (_CHECKSUM in raw or _RETENTION in raw):
                        on_entry(json.loads(raw))
                    before, seq, prev = prev, n, digest
            if number == 0 and not last:
                raise Broken("segment is empty", path)
        finally:
            r.last_seq = r.entries = seq
            r.last_hash, r.last_prev, r.last_epoch = prev.decode(), before.decode(), epoch
            self._key, self._closes_raw = key, closes_raw
        r.last_closes = closes_raw is not None and _closes(closes_raw)

    def _epoch_step(self, raw: bytes, closes_raw: bytes | None, epoch: int | None,
                    new: int | None, key: bytes | None, path: Path, number: int,
                    seq: int) -> bytes | None:
        r = self.result
        if epoch is None:  # the first sealed entry: must be the seal-init of epoch 0
            entry = json.loads(raw)
            if entry.get("event") != "seal-init" or new != 0:
                raise Broken(f"entry {seq} is sealed but is not the log's seal-init entry",
                             path, number)
            r.sealed_from, r.key_id = seq, str(entry.get("key_id"))
            if self.key is not None:
                if key_id(self.key) != r.key_id:
                    raise Broken(f"the log was sealed with key {r.key_id}; the key given is "
                                 f"{key_id(self.key)}", path, number)
                r.seals_checked = True
                return self.key
            return None
        if new is None:
            raise Broken(f"entry {seq} is not sealed, but sealing began at entry "
                         f"{r.sealed_from}", path, number)
        if new != epoch + 1 or closes_raw is None or not _closes(closes_raw):
            raise Broken(f"entry {seq} is in epoch {new} but the entry before is in epoch "
                         f"{epoch} and does not end it: entries were removed or rewritten",
                         path, number)
        return evolve(key) if key is not None else None

    def finish_seal_state(self, state: SealState | None, seal_path: Path) -> None:
        """The sealing state must continue the log: same key, its epoch or the next."""
        r = self.result
        if not r.ok:
            return
        if r.sealed_from is None:
            if state is not None or (r.entries == 0 and seal_path.exists()):
                self._fail(f"sealing state {seal_path.name} exists but the log has no seal-init "
                           "entry: the log was replaced, or `audit init` was interrupted "
                           "(run it again)", seal_path)
            return
        if state is None:
            self._fail(f"sealing state {seal_path.name} is missing (the log is sealed since "
                       f"entry {r.sealed_from}): it was deleted", seal_path)
            return
        if state.key_id != r.key_id:
            self._fail(f"sealing state belongs to key {state.key_id}, the log to {r.key_id}",
                       seal_path)
            return
        epoch = r.last_epoch or 0
        expected = epoch + 1 if r.last_closes else epoch
        if state.epoch not in (epoch, expected):
            if state.epoch > expected:
                self._fail(f"the log ends in epoch {epoch} but sealing is at epoch "
                           f"{state.epoch}: entries were cut off the end", seal_path)
            else:
                self._fail(f"sealing state is at epoch {state.epoch}, behind the log (epoch "
                           f"{epoch}): it was replaced with an old copy", seal_path)
            return
        if self._key is not None:
            want = self._key if state.epoch == epoch else evolve(self._key)
            if state.key != want:
                self._fail("sealing state's key is not the one derived from the verification "
                           "key: it was replaced", seal_path)

    def finish_checkpoints(self) -> None:
        r = self.result
        if not r.ok:
            return
        for seq, digest in sorted(self.checkpoints.items()):
            if seq == 0 and digest != GENESIS:
                self._fail(f"checkpoint 0:{digest}: entry 0 is always {GENESIS}")
                return
            if seq > r.last_seq:
                self._fail(f"checkpoint {seq}:{digest}: entry {seq} is missing, the log ends "
                           f"at entry {r.last_seq} (cut off or replaced after the checkpoint "
                           "was taken)")
                return

    def _fail(self, problem: str, file: Path | None = None) -> None:
        r = self.result
        r.ok, r.problem, r.file, r.bad_line = False, problem, file, None


def _closes(raw: bytes) -> bool:
    try:
        return json.loads(raw).get("event") in CLOSERS
    except (ValueError, AttributeError):
        return False
