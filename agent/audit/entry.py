"""One audit entry as one line of bytes: how it is written, hashed, sealed and read back.

A line is JSON with a fixed layout, so `audit verify` can check a million of them without
decoding each one:

    {"seq":N,"prev":"<hex>"[,"epoch":E],<other fields, canonical>,"hash":"<hex>"[,"seal":"<hex>"]}

`hash` is the SHA-256 of the line's bytes before `,"hash":` (the *body*); `seal` is
HMAC-SHA256 of the 32 hash bytes under the key of epoch E. "Canonical" is `json.dumps`
with sorted keys, no spaces, UTF-8. `entry_hash(entry)` rebuilds the body from a decoded
entry; a line that does not follow the layout but whose `hash` is `entry_hash` of its
content still chains (an edit made with this module's own functions is a consistent
rewrite: the chain cannot tell, the seals can).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
HEADER_KEYS = ("seq", "prev", "epoch")
TRAILER_KEYS = ("hash", "seal")
_HASH_TAIL = len(b',"hash":"') + 64 + len(b'"}\n')
_SEALED_TAIL = len(b',"hash":"') + 64 + len(b'","seal":"') + 64 + len(b'"}\n')


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body_bytes(entry: dict[str, Any]) -> bytes:
    """The hashed part of the line of `entry` (which holds at least seq and prev)."""
    head = b'{"seq":%d,"prev":"%s"' % (int(entry["seq"]), str(entry["prev"]).encode())
    if entry.get("epoch") is not None:
        head += b',"epoch":%d' % int(entry["epoch"])
    rest = {k: v for k, v in entry.items() if k not in HEADER_KEYS and k not in TRAILER_KEYS}
    return head + (b"," + canonical(rest)[1:-1] if rest else b"")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(body_bytes(entry)).hexdigest()


def seal_of(key: bytes, digest_hex: str) -> str:
    return hmac.digest(key, bytes.fromhex(digest_hex), "sha256").hex()


def encode(entry: dict[str, Any], key: bytes | None = None) -> tuple[bytes, str]:
    """The line for `entry` (seq, prev and, when sealed, epoch set) and its hash."""
    body = body_bytes(entry)
    digest = hashlib.sha256(body).hexdigest()
    line = body + b',"hash":"' + digest.encode() + b'"'
    if key is not None:
        line += b',"seal":"' + seal_of(key, digest).encode() + b'"'
    return line + b"}\n", digest


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the chain needs of one line; `problem` is set when the line is unusable."""

    seq: int = 0
    prev: str = ""
    hash: str = ""
    epoch: int | None = None
    seal: str | None = None
    hash_ok: bool = False
    problem: str = ""


def parse(raw: bytes) -> Parsed:
    """Read one line (with its newline). Fast for lines this module wrote; any other JSON
    object is decoded and its hash compared with `entry_hash` of its content."""
    if raw.startswith(b'{"seq":') and raw.endswith(b'"}\n'):
        fast = _parse_layout(raw)
        if fast is not None:
            return fast
    return _parse_json(raw)


def _parse_layout(raw: bytes) -> Parsed | None:
    comma = raw.find(b",", 7)
    if comma < 0 or raw[comma:comma + 9] != b',"prev":"' or raw[comma + 73:comma + 74] != b'"':
        return None
    try:
        seq = int(raw[7:comma])
    except ValueError:
        return None
    prev = raw[comma + 9:comma + 73].decode("ascii", "replace")
    epoch: int | None = None
    if raw[comma + 74:comma + 83] == b',"epoch":':
        end = raw.find(b",", comma + 83)
        try:
            epoch = int(raw[comma + 83:end])
        except ValueError:
            return None
    seal: str | None = None
    if raw[-77:-67] == b'","seal":"':
        start, seal = len(raw) - _SEALED_TAIL, raw[-67:-3].decode("ascii", "replace")
        stored = raw[start + 9:start + 73]
    else:
        start = len(raw) - _HASH_TAIL
        stored = raw[start + 9:-3]
    if raw[start:start + 9] != b',"hash":"':
        return None
    if (epoch is None) != (seal is None):
        return None  # a seal without its epoch or the other way round: decode and report
    digest = hashlib.sha256(raw[:start]).hexdigest()
    return Parsed(seq, prev, digest, epoch, seal, hash_ok=stored == digest.encode())


def _parse_json(raw: bytes) -> Parsed:
    try:
        entry = json.loads(raw)
    except ValueError:
        return Parsed(problem="line is not valid JSON")
    if not isinstance(entry, dict):
        return Parsed(problem="line is not a JSON object")
    seq, prev, stored = entry.get("seq"), entry.get("prev"), entry.get("hash")
    epoch, seal = entry.get("epoch"), entry.get("seal")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(stored, str):
        return Parsed(problem="line lacks seq, prev or hash")
    if epoch is not None and type(epoch) is not int:
        return Parsed(problem="epoch is not a number")
    if (epoch is None) != (seal is None):
        return Parsed(problem="entry has an epoch without a seal or a seal without an epoch")
    try:
        digest = entry_hash(entry)
    except (TypeError, ValueError):
        return Parsed(problem="line lacks seq, prev or hash")
    return Parsed(seq, prev, digest, epoch, seal if isinstance(seal, str) else None,
                  hash_ok=stored == digest)
