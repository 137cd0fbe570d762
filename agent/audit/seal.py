"""Forward-secure sealing keys: one key per epoch, each derived one-way from the one before.

    k_0        random 32 bytes from `secrets`: the verification key, printed once by
               `audit init`, never stored on the host
    k_(e+1)  = HMAC-SHA256(k_e, "dap-agent audit epoch evolve")

The host keeps only the current epoch's key (`audit.seal`, 0600). When an epoch ends the
new key is written (temporary file, fsync, rename) and the old file's bytes are then
overwritten with zeros and fsynced, so today's state holds nothing from which an earlier
key follows (HMAC is one-way). Whoever holds k_0 derives every key and checks every seal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError
from agent.files import fsync_directory, read_state_bytes, write_atomic

KEY_PREFIX = "dapv1-"
_EVOLVE = b"dap-agent audit epoch evolve"
_KEY_ID = b"dap-agent audit key id\x00"
STATE_FORMAT = 1


class Sealer:
    """HMAC-SHA256 (RFC 2104) of 32-byte hashes under one key, for a million of them: the
    key's padded inner and outer blocks are hashed once and copied per message, as the
    stdlib's own pure-Python `hmac.HMAC` does; twice as fast as `hmac.digest` per call
    (OpenSSL sets the key up again each time). Equal to `hmac.digest` (tested)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # longer than a SHA-256 block: RFC 2104 hashes it first
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def seal(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def new_key() -> bytes:
    return secrets.token_bytes(32)


def evolve(key: bytes) -> bytes:
    return hmac.digest(key, _EVOLVE, "sha256")


def key_id(k0: bytes) -> str:
    """A public name of a verification key: tells which key sealed a log, reveals nothing."""
    return hashlib.sha256(_KEY_ID + k0).hexdigest()[:16]


def key_text(k0: bytes) -> str:
    return KEY_PREFIX + k0.hex()


def parse_key(text: str) -> bytes:
    cleaned = "".join(text.split())
    if cleaned.startswith(KEY_PREFIX):
        cleaned = cleaned[len(KEY_PREFIX):]
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"--key: not a verification key (expected {KEY_PREFIX} and 64 hex "
                         "digits, as `dap-agent audit init` printed it)")
    return key


@dataclass(frozen=True)
class SealState:
    epoch: int
    key: bytes
    key_id: str

    def to_bytes(self) -> bytes:
        return json.dumps({"format": STATE_FORMAT, "epoch": self.epoch, "key": self.key.hex(),
                           "key_id": self.key_id}, sort_keys=True).encode() + b"\n"


class SealStateError(Exception):
    pass


def load_state(path: Path) -> SealState | None:
    """The sealing state, or None when there is none; SealStateError when unreadable."""
    try:
        data = json.loads(read_state_bytes(path))
        state = SealState(int(data["epoch"]), bytes.fromhex(data["key"]), str(data["key_id"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SealStateError(f"{path}: sealing state unreadable ({exc})") from None
    if len(state.key) != 32 or state.epoch < 0:
        raise SealStateError(f"{path}: sealing state unreadable (bad key or epoch)")
    return state


def store_state(path: Path, state: SealState) -> None:
    """Replace the sealing state atomically, then destroy the old key's bytes."""
    try:
        old = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        old = -1
    try:
        write_atomic(path, state.to_bytes())
        if old >= 0:
            _zero(old)
    finally:
        if old >= 0:
            os.close(old)
    fsync_directory(path.parent)


def _zero(fd: int) -> None:
    """Overwrite an (unlinked) file's bytes in place and fsync them. Best effort against
    the disk: a journaling or copy-on-write file system or an SSD may keep old blocks."""
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = b"\0" * size
    while zeros:
        written = os.write(fd, zeros)
        zeros = zeros[written:]
    os.fsync(fd)


def next_state(state: SealState) -> SealState:
    return SealState(state.epoch + 1, evolve(state.key), state.key_id)
