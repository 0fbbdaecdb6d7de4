"""One training run per workdir: an exclusive advisory lock on `<workdir>/.lock`.

`fcntl.flock` locks belong to the open file, so the kernel releases them when the holder exits, crashes or is
killed: a dead run never blocks the next one (its holder record stays in the file until the next run replaces
it). The file records the holder (host, pid, start time) so that a refused run can name it. Local file
systems and NFS (v4, or v3 with lockd; Linux emulates flock with POSIX locks there) lock across hosts;
Lustre needs the `flock` mount option, and FUSE mounts such as gcsfuse lock only within one host.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import IO

LOCK_NAME = ".lock"


class WorkdirLockedError(RuntimeError):
    """Another live run holds the workdir's lock."""


class WorkdirLock:
    """Holds `<workdir>/.lock` from construction until `release()` (or until the process ends)."""

    def __init__(self, workdir: str | os.PathLike):
        """Takes the lock without waiting; raises WorkdirLockedError naming the holder when it is held."""
        self.path = os.path.join(os.fspath(workdir), LOCK_NAME)
        # "a+", not "w": the holder's record must survive a failed attempt to take its lock.
        self._file: IO[str] | None = open(self.path, "a+")  # noqa: SIM115  (held until release())
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(self._file)
            self.release()
            raise WorkdirLockedError(
                f"--workdir={os.fspath(workdir)} is in use by another run: {holder} (lock {self.path}); "
                "stop that run or choose another --workdir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(_holder_record()) + "\n")
        self._file.flush()

    def release(self) -> None:
        """Closes the file, which releases the lock (the holder record stays); a second call does nothing."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _holder_record() -> dict[str, object]:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started}


def _describe_holder(file: IO[str]) -> str:
    """'host H, pid P, started T' from the holder's record, or what the file holds instead."""
    file.seek(0)
    text = file.read().strip()
    try:
        record = json.loads(text)
        return f"host {record['host']}, pid {record['pid']}, started {record['started']}"
    except (ValueError, KeyError, TypeError):
        return f"holder not recorded yet (the lock file holds {text[:200]!r})"
