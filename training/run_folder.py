"""A run folder belongs to one training at a time.

:class:`RunFolderLock` holds an exclusive ``flock`` on ``<out>/.lock`` for as long as a training
runs; the file names the holder (pid and command line). A second training into the same folder
is refused with a line naming that process instead of mixing its checkpoints with the first's.
The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a
killed run never leaves the folder locked.

Once the lock is held, every temporary file of an atomic write in the folder is stale (a write
killed midway): :meth:`RunFolderLock.acquire` removes them
(:func:`caer_ros.atomic_file.remove_stale_temp_files`) and returns their names.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from caer_ros.atomic_file import new_file_mode, remove_stale_temp_files

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process trains into this run folder."""


class RunFolderLock:
    """``lock = RunFolderLock(out); lock.acquire(); ...; lock.release()`` (or ``with``)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> list[Path]:
        """Take the folder (creating it) or raise :class:`RunFolderBusy`; returns the stale
        temporary files it removed."""
        if self._fd is not None:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, new_file_mode(self.path))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"{self.folder} is in use by {holder}; wait for it to end or "
                                f"train into another --out") from None
        os.ftruncate(fd, 0)
        command = " ".join([os.path.basename(sys.executable), *sys.argv])
        os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode(errors="replace"), 0)
        self._fd = fd
        return remove_stale_temp_files(self.folder, owned=True)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter exit; the kernel drops the lock anyway
            pass


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    if not pid.strip().isdigit():
        return "another process"
    command = command.strip()
    return f"process {pid.strip()}" + (f" ({command})" if command else "")


def report_removed(removed: list[Path]) -> None:
    """One line about the temporary files a killed write had left (nothing when none)."""
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        print(f"removed {len(removed)} temporary file(s) left by an interrupted write: {names}",
              file=sys.stderr, flush=True)
