"""The audit log: hash-chained, forward-secure sealed, checkpointed, in monthly segments.

Design (product-spec "The audit log: seals and checkpoints"; DAP 3.12.3 and 4.5):

- **Chain.** Every entry is one JSON line carrying `seq`, `prev` (the hash of the entry
  before) and `hash` (SHA-256 of its own bytes, see `agent.audit.entry`). `audit.head`
  holds the last seq and hash, so cutting entries off the end is detected. A run checks
  the whole chain before it starts (`AuditLog.check`) and never appends to a log that
  fails it; appends are all or nothing (a short write is continued, a failed write is
  undone, fsync before the caller's next change).
- **Seals.** After `audit init`, every entry also carries `epoch` and `seal`
  (HMAC-SHA256 of its hash under the epoch's key). An epoch ends with every run: an
  `epoch-closed` entry is sealed under the old key, then the key evolves one-way
  (`agent.audit.seal`) and the old one is overwritten. The verification key k_0 is
  printed once and never stored. Because each seal covers the hash, which covers all
  that came before, and an epoch can only end with a sealed `epoch-closed` entry,
  rewriting anything before the current epoch needs a key the host no longer has:
  `audit verify --key` fails. Whoever takes the host can alter or drop only the entries
  written since the last run ended; the sealing state's epoch also gives away entries cut
  from earlier epochs.
- **Checkpoints.** `SEQ:HASH` of an entry, carried by every run report, mail and
  notification; `audit verify --checkpoint` proves the log still holds that entry, so
  truncating or replacing the log behind a checkpoint someone keeps is detected.
- **Segments.** A new month starts a new file; earlier months are in
  `audit-segments/<first seq>-<YYYY-MM>.jsonl`, chained to each other by seq and prev.
- **Repair.** A torn last line (a crash mid-write: nothing followed it) is cut off by
  the next append, which records what it removed. Damage anywhere else is never repaired:
  `audit rotate --reason` moves the log aside and starts a new chain that records the
  old head, the break and the reason.
"""

from agent.audit.entry import GENESIS, canonical, entry_hash, utc_now_iso
from agent.audit.log import (
    AuditBrokenError,
    AuditLog,
    AuditWriteError,
    parse_checkpoint,
)
from agent.audit.verify import VerifyResult

__all__ = ["GENESIS", "AuditBrokenError", "AuditLog", "AuditWriteError", "VerifyResult",
           "canonical", "entry_hash", "parse_checkpoint", "utc_now_iso"]
