"""Write a file so that readers see either the old file or the whole new one, never a part.

Model files, ONNX exports and results are written through :func:`atomic_write`: the data goes
to a temporary file beside the target (``.<name>.<pid>.<random>.tmp``), is flushed to disk, then
renamed over the target. On any error the temporary file is removed and the target is untouched.

The written file gets the permissions a plain ``open(path, "wb")`` would give it: those of the
file it replaces, or ``0o666`` less the process's umask for a new file (a temporary file alone
would be ``0o600``, unreadable for a node or a colleague running as another user).

A write killed midway (SIGKILL, power loss) leaves its temporary file behind. The next write
of the same target removes those of processes that no longer run, and
:func:`remove_stale_temp_files` clears a whole folder that one process owns (a run folder).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# .<target name>.<pid>.<mkstemp's 8 random characters>.tmp; the pid is missing in files
# written before it was added to the name.
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read (set and restore)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode ``open(path, "wb")`` leaves ``path`` with: the existing file's, or 0o666 less
    the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an absurd number): leave its file alone
    return True


def remove_stale_temp_files(folder: str | os.PathLike, target: str | None = None,
                            owned: bool = False) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    ``target``: only those of that file name. ``owned``: the caller owns the folder (holds its
    lock), so every temporary file in it is stale; otherwise only those whose writing process
    no longer runs are removed. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMP.match(entry.name)
        if found is None or (target is not None and found["name"] != target):
            continue
        pid = found["pid"]
        if not owned and (pid is None or _alive(int(pid))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as stream: stream.write(...)``; ``path`` appears on exit."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    remove_stale_temp_files(folder, target=path.name)
    mode = new_file_mode(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
