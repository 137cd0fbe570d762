"""Clear words for a state directory this user cannot use.

The state dir belongs to the service user (mode 0700). An admin who runs `dap-agent jobs`
or `audit verify` as themselves gets "permission denied": that is a usage problem with a
known fix (run as the service user), exit 2, not an internal error with a traceback hint.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from agent.errors import UsageError

SERVICE_HINT = ("run dap-agent as the service user that owns the state, e.g. "
                "`sudo -u dap-agent dap-agent ...` (for a template instance the instance's user)")


def _owner(path: Path) -> str:
    """`owned by USER, mode 0700` of the nearest existing directory or file, or ''."""
    for candidate in (path, *path.parents):
        try:
            info = candidate.stat()
        except OSError:
            continue
        try:
            user = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            user = f"uid {info.st_uid}"
        where = "" if candidate == path else f"{candidate} "
        return f"{where}owned by {user}, mode {stat.S_IMODE(info.st_mode):04o}"
    return ""


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def access_error(path: Path | str, problem: str = "permission denied",
                 setting: str = "state_dir") -> UsageError:
    path = Path(path)
    owner = _owner(path)
    details = f"{owner}; you are {_me()}" if owner else f"you are {_me()}"
    return UsageError(f"{setting}: {path}: {problem} ({details}): {SERVICE_HINT}")


def check_readable(state_dir: Path) -> None:
    """UsageError (exit 2) when the state dir exists but this user cannot read it.
    A missing state dir passes: the commands say what a missing one means."""
    try:
        exists = state_dir.exists()
    except PermissionError:  # a parent we cannot search
        raise access_error(state_dir) from None
    if not exists:
        return
    if not state_dir.is_dir():
        raise UsageError(f"state_dir: {state_dir}: not a directory")
    if not os.access(state_dir, os.R_OK | os.X_OK):
        raise access_error(state_dir)


def check_writable(state_dir: Path) -> None:
    """As `check_readable`, and the user can create files in it (a run, serve)."""
    check_readable(state_dir)
    if state_dir.exists() and not os.access(state_dir, os.W_OK | os.X_OK):
        raise access_error(state_dir, "not writable")
