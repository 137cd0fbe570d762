"""Writing the agent's files: atomically, privately (0600 in 0700 directories), durably,
and without following a symlink anybody planted in the state directory.

Every state, report and export file goes through `write_atomic`, so a process killed at any
moment leaves either the old file or the new one, never half of one.

Symlinks (threat model, README): whoever runs as the service user can write the state dir;
the agent is also run by hand, sometimes as root. So below a state dir (registered with
`trust_state_dir`) every directory is opened component by component relative to the
previous one's descriptor with `O_NOFOLLOW`, and every file is opened with `O_NOFOLLOW`
relative to its directory's descriptor: a planted symlink (`locks/x.lock -> /etc/shadow`,
`exports -> /elsewhere`) is refused with `UnsafePathError` instead of being written
through. The state dir itself may be a symlink (the admin chose it in the config); it is
then used as it is and never chmod'ed through the link.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from agent.errors import DiskFullError, UnsafePathError, UsageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_FULL = (errno.ENOSPC, errno.EDQUOT)
_state_roots: set[Path] = set()


def trust_state_dir(state_dir: Path) -> None:
    """Everything below `state_dir` is opened without following any symlink."""
    _state_roots.add(Path(os.path.abspath(state_dir)))


def _root_of(directory: Path) -> Path | None:
    roots = [r for r in _state_roots if directory == r or directory.is_relative_to(r)]
    return min(roots, key=lambda r: len(r.parts)) if roots else None


def open_dir(directory: Path, *, create: bool = True) -> int:
    """A descriptor of `directory` (the caller closes it), created 0700 where missing.

    Below a trusted state dir no component may be a symlink; elsewhere (tests, `--output`)
    only the components this call creates or walks past the deepest existing one are
    checked."""
    directory = Path(os.path.abspath(directory))
    root = _root_of(directory)
    if root is None:
        root = directory
        while not os.path.lexists(root) and root != root.parent:
            root = root.parent
    fd = _open_root(root, create)
    for part in directory.relative_to(root).parts:
        fd = _step(fd, part, directory, create)  # closes the parent's descriptor, always
    return fd


def _open_root(root: Path, create: bool) -> int:
    if create and not os.path.lexists(root):
        return _step(open_dir(root.parent, create=True), root.name, root, create=True)
    try:
        return os.open(root, _DIR_FLAGS)  # the root may be a symlink: the admin's choice
    except NotADirectoryError:
        raise UnsafePathError(f"{root}: not a directory") from None


def _step(parent_fd: int, name: str, whole: Path, create: bool) -> int:
    """Open `name` below `parent_fd` as a directory, not following a symlink; closes
    `parent_fd` and returns the new descriptor."""
    try:
        try:
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            with suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
            os.fchmod(fd, 0o700)  # the umask may have taken bits away, never added: be exact
            return fd
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unsafe(parent_fd, name, whole) from None
            raise
    finally:
        os.close(parent_fd)


def _unsafe(dir_fd: int, name: str, whole: Path) -> UnsafePathError:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file or directory"
    return UnsafePathError(
        f"{whole}: {name} is {what}; the agent does not follow symlinks or write to special "
        "files inside its state directory (someone with write access to it may have "
        "planted it): remove it and run again")


def open_state_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """`os.open(path, flags)` relative to its directory's descriptor, never following a
    symlink and refusing anything but a regular file (a fifo is not waited on)."""
    path = Path(os.path.abspath(path))
    dfd = open_dir(path.parent, create=bool(flags & os.O_CREAT))
    try:
        try:  # a device node is never even opened (an open alone may act, e.g. a tape rewinds)
            if not stat.S_ISREG(os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode):
                raise _unsafe(dfd, path.name, path)
        except FileNotFoundError:
            pass  # created below (O_CREAT) or reported by the open
        try:
            fd = os.open(path.name, flags | _NOFOLLOW | os.O_NONBLOCK, mode, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(dfd, path.name, path) from None
            # opened relative to a descriptor, the error names only the file: name it whole
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise _unsafe(dfd, path.name, path)
        if flags & (os.O_WRONLY | os.O_RDWR) and info.st_nlink > 1:
            # a hard link to another file: a lock's holder record or an append would
            # truncate or change that file (as a symlink would)
            os.close(fd)
            raise UnsafePathError(
                f"{path}: has {info.st_nlink} hard links, so it may be someone else's file: "
                "the agent writes only files of its own in its state directory; nothing was "
                "written to it. Remove it and run again")
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        return fd
    finally:
        os.close(dfd)


def open_state_reader(path: Path) -> BinaryIO:
    """A state file opened for reading (streamed: the audit log), without following a
    symlink."""
    return os.fdopen(open_state_file(path, os.O_RDONLY), "rb")


def read_state_bytes(path: Path) -> bytes:
    """The whole of a state file, read without following a symlink."""
    with open_state_reader(path) as handle:
        return handle.read()


def append_line(path: Path, data: bytes) -> None:
    """Append `data` (one record) to a state file, all of it (no short write), fsync'ed."""
    try:
        fd = open_state_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFullError(path, "the record was not appended") from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600, creating the directories (0700).

    The temporary file is `.<name>.<pid>.<random>.tmp`: a process killed before its rename
    leaves it behind, and `remove_stale_temporaries` knows it by the dead pid.
    """
    write_atomic_chunks(path, (data,))


def write_atomic_chunks(path: Path, chunks: Iterable[bytes]) -> str:
    """`write_atomic` for data made piece by piece (a 100k-row export never sits in memory
    whole); returns the SHA-256 of what was written."""
    path = Path(os.path.abspath(path))
    try:
        dfd = open_dir(path.parent, create=True)
        try:
            return _replace_in(dfd, path, chunks)
        finally:
            os.close(dfd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFullError(path, "it was not written (an earlier version, if any, is "
                                "unchanged)") from None
        raise


def _replace_in(dfd: int, path: Path, chunks: Iterable[bytes]) -> str:
    try:
        current = os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        current = stat.S_IFREG
    if not stat.S_ISREG(current):
        raise _unsafe(dfd, path.name, path)
    digest = hashlib.sha256()
    tmp = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fchmod(handle.fileno(), 0o600)
            os.fsync(handle.fileno())
        os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    with suppress(OSError):
        os.fsync(dfd)  # make the rename durable
    return digest.hexdigest()


def write_output(path: Path, data: bytes) -> None:
    """`--output PATH`: a new or regular file only, replaced atomically in its directory;
    never a device, fifo, socket or symlink (as root, renaming over /dev/null would
    replace the device node)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
        raise UsageError(f"--output {path}: {what}; write to a new file or a regular one")
    write_atomic(path, data)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an flock on `path` (a private lock file, kept, never truncated or followed):
    serialises writers across the daemon and CLI processes; the kernel drops it if the
    holder dies."""
    fd = open_state_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def make_private_dirs(directory: Path) -> None:
    """mkdir -p where every directory created is 0700 (mkdir's mode covers only the last);
    below a state dir no component may be a symlink."""
    os.close(open_dir(directory, create=True))


def secure_state_dir(state_dir: Path) -> None:
    """Create the state dir 0700 and keep it 0700; a state dir that is a symlink (allowed,
    README) is used as it is and never chmod'ed through the link."""
    trust_state_dir(state_dir)
    os.close(open_dir(state_dir, create=True))
    try:
        fd = os.open(state_dir, _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return  # a symlink: its target's permissions are the admin's
        raise
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def state_files(directory: Path) -> list[Path]:
    """The regular files (not symlinks) in a state directory, sorted; [] if it is missing."""
    try:
        dfd = open_dir(directory, create=False)
    except FileNotFoundError:
        return []
    try:
        return sorted(directory / name for name in os.listdir(dfd)
                      if stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode))
    finally:
        os.close(dfd)


def remove_state_file(path: Path) -> None:
    """Unlink `path` relative to its directory's descriptor (never through a symlinked
    directory); a file already gone is fine."""
    try:
        dfd = open_dir(path.parent, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = open_dir(directory, create=False)
    except (OSError, UnsafePathError):
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the temporary files `write_atomic` left when its process was killed.

    Only files whose writer is gone (the pid in the name no longer runs); another live
    process's file in flight is left alone. Returns the names removed.
    """
    removed: list[str] = []
    try:
        dfd = open_dir(directory, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    try:
        for name in sorted(os.listdir(dfd)):
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            parts = name[:-len(".tmp")].rsplit(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid() or _running(pid):
                continue
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                continue
            removed.append(name)
    finally:
        os.close(dfd)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
