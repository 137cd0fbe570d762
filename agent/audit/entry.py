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
from binascii import hexlify
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


# (seq, prev, hash, hash ok, epoch, seal, 32 hash bytes); prev, hash and seal as ASCII hex
Scanned = tuple[int, bytes, bytes, bool, int | None, bytes | None, bytes]


class BadLine(ValueError):
    pass


def parse(raw: bytes) -> Parsed:
    """Read one line (with its newline)."""
    try:
        seq, prev, digest, ok, epoch, seal, _ = scan(raw)
    except BadLine as exc:
        return Parsed(problem=str(exc))
    return Parsed(seq, prev.decode("ascii", "replace"), digest.decode(), epoch,
                  seal.decode("ascii", "replace") if seal is not None else None, hash_ok=ok)


def scan(raw: bytes) -> Scanned:
    """One line (with its newline) for the chain: fast for lines this module wrote (no
    JSON decoding, few copies: `audit verify` reads a million); any other JSON object is
    decoded and its hash compared with `entry_hash` of its content. BadLine when it is no
    entry at all."""
    end = len(raw)
    comma = raw.find(b",", 7)
    if (raw.startswith(b'{"seq":') and raw.endswith(b'"}\n')
            and raw.startswith(b',"prev":"', comma) and raw.startswith(b'"', comma + 73)):
        epoch: int | None = None
        digits = b"0"
        if raw.startswith(b',"epoch":', comma + 74):
            digits = raw[comma + 83:raw.find(b",", comma + 83)]
            epoch = int(digits) if digits.isdigit() else None
        sealed = raw.startswith(b'","seal":"', end - 77)
        start = end - (_SEALED_TAIL if sealed else _HASH_TAIL)
        number = raw[7:comma]
        if (number.isdigit() and digits.isdigit() and sealed == (epoch is not None)
                and raw.startswith(b',"hash":"', start)):
            digest = hashlib.sha256(raw[:start]).digest()
            hexed = hexlify(digest)
            return (int(number), raw[comma + 9:comma + 73], hexed,
                    raw.startswith(hexed, start + 9), epoch,
                    raw[end - 67:end - 3] if sealed else None, digest)
    return _scan_json(raw)

def _scan_json(raw: bytes) -> Scanned:
    try:
        entry = json.loads(raw)
    except ValueError:
        raise BadLine("line is not valid JSON") from None
    if not isinstance(entry, dict):
        raise BadLine("line is not a JSON object")
    seq, prev, stored = entry.get("seq"), entry.get("prev"), entry.get("hash")
    epoch, seal = entry.get("epoch"), entry.get("seal")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(stored, str):
        raise BadLine("line lacks seq, prev or hash")
    if epoch is not None and type(epoch) is not int:
        raise BadLine("epoch is not a number")
    if (epoch is None) != (seal is None) or (seal is not None and not isinstance(seal, str)):
        raise BadLine("entry has an epoch without a seal or a seal without an epoch")
    try:
        digest = hashlib.sha256(body_bytes(entry)).digest()
    except (TypeError, ValueError):
        raise BadLine("line lacks seq, prev or hash") from None
    hexed = hexlify(digest)
    if stored.encode() != hexed and epoch is None:
        # written before sealing existed (one canonical JSON object, hash among its keys):
        # such logs keep verifying after an upgrade
        legacy = hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"}))
        if legacy.hexdigest() == stored:
            digest, hexed = legacy.digest(), stored.encode()
    return (seq, prev.encode(), hexed, stored.encode() == hexed, epoch,
            seal.encode() if isinstance(seal, str) else None, digest)
