"""What `dap-agent audit init|verify|rotate` print (the CLI module stays thin)."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.audit.log import AuditLog, parse_checkpoint
from agent.audit.seal import parse_key
from agent.errors import EXIT_INTERNAL, EXIT_OK, UsageError


def init(log: AuditLog) -> int:
    key = log.init_sealing()
    print(f"sealing started: {log.seal_path} (0600) holds the current epoch's key; every run "
          "ends an epoch and destroys the key before it")
    print("Keep the verification key below off this host: one copy with the provider, one "
          "with the customer (`audit verify --key-file FILE` checks every seal with it). It "
          "is not stored anywhere and is shown only now.")
    print(f"verification key: {key}")
    return EXIT_OK


def verify(log: AuditLog, *, key: str | None, key_file: str | None,
           checkpoints: list[str]) -> int:
    secret = None
    if key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--key-file {key_file}: cannot read it ({exc})") from None
        key = key.strip().removeprefix("verification key:")
    if key is not None:
        secret = parse_key(key)
    held = [parse_checkpoint(text) for text in checkpoints]
    result = log.verify_all(key=secret, checkpoints=held)
    for note in result.notes:
        print(f"note: {note}")
    if not result.ok:
        print(f"audit log NOT intact: {result.where()}{result.problem} ({result.entries} "
              "entries checked)")
        return EXIT_INTERNAL
    if result.sealed_from is None:
        seals = "not sealed (`dap-agent audit init` starts sealing)"
        if secret is not None:
            print(f"audit log NOT intact: --key given but the log carries no seals ({log.path})")
            return EXIT_INTERNAL
    elif result.seals_checked:
        seals = f"every seal valid since entry {result.sealed_from} (key {result.key_id})"
    else:
        seals = "seals not checked (give --key or --key-file)"
    held_text = f"; checkpoints held: {', '.join(f'{s}' for s, _ in held)}" if held else ""
    print(f"audit log intact: {result.entries} entries ({log.path}); {seals}{held_text}")
    print(f"checkpoint: {result.last_seq}:{result.last_hash}")
    return EXIT_OK


def rotate(log: AuditLog, reason: str) -> int:
    aside, record = log.rotate(reason)
    old = record["break"]
    print(f"moved the broken log aside to {aside} (it broke at {old['file']} line "
          f"{old['line']}: {old['problem']})")
    print(f"new chain started: entry {record['seq']} records the old head and the reason "
          f"(checkpoint {record['seq']}:{record['hash']})")
    if (aside / log.seal_path.name).exists():
        print("the new chain is not sealed: run `dap-agent audit init` and keep its key")
    return EXIT_OK


def warn_if_broken(log: AuditLog) -> None:
    """Read-only commands keep working on a broken log, and say that it is broken (a
    state directory not made yet is a fresh install, not a broken log)."""
    if not log.path.parent.exists():
        return
    result = log.verify(allow_empty=True)
    if not result.ok:
        print(f"warning: {result.message()}", file=sys.stderr)
