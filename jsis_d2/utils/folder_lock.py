"""One writer per folder: an exclusive ``fcntl.flock`` on a hidden lock file in the folder.

A training run holds its OUTPUT_DIR, ``run_demo.py`` its ``--output``, the synthetic generator
its dataset root, for as long as they write there. A second process asking for the same
folder gets :class:`FolderBusyError` at once, naming the folder and the holder's pid (written
into the lock file). The kernel drops the lock when the holder's process ends in any way
(exit, exception, SIGKILL, crash): a killed run never leaves the folder locked. A hold that
ends normally removes the lock file (what the generator writes stays byte-identical); one
left by a killed process is only a file, reused by the next run.

Within one process the lock is re-entrant (``run_demo.py`` holds its output folder and then
calls the training, which asks for the same folder): nested holds share one file descriptor
and the lock is released when the outermost hold ends. Locks are advisory: only jsis_d2's
tools take them.
"""

import contextlib
import fcntl
import logging
import os
import socket

__all__ = ["FolderBusyError", "LOCK_FILE", "hold_folder", "acquire_folder"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".jsis_d2.lock"

# realpath of the folder -> [fd, number of holds] (this process's locks)
_HELD = {}


class FolderBusyError(RuntimeError):
    """Another process holds the folder; the message names it and the holder's pid."""


class _Hold:
    """One hold of a folder lock (:func:`acquire_folder`); :meth:`release` ends it."""

    def __init__(self, key):
        self._key = key

    def release(self):
        if self._key is None:
            return
        entry = _HELD[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self._key]
            # unlink while still locked: a process that opened this file meanwhile sees, once
            # it gets the lock, that the path no longer names it, and starts over
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._key, LOCK_FILE))
            os.close(entry[0])  # drops the flock
        self._key = None


def acquire_folder(folder, what="folder"):
    """Lock ``folder`` (created if missing) for this process; returns a hold whose
    ``release()`` ends it. ``what`` names the folder in the error ("OUTPUT_DIR", "dataset
    root", ...). Raises FolderBusyError when another process holds it, OSError when the
    folder cannot be created or the lock file not opened (e.g. read-only)."""
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return _Hold(key)
    path = os.path.join(key, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{what} {folder} is in use by another run ({holder}; lock file {path}): wait "
                f"for it to end, or choose another {what}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder removed on release: take the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    return _Hold(key)


@contextlib.contextmanager
def hold_folder(folder, what="folder"):
    """``with hold_folder(out, "OUTPUT_DIR"): ...``: :func:`acquire_folder` for the block."""
    hold = acquire_folder(folder, what)
    try:
        yield
    finally:
        hold.release()


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
