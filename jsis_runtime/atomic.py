"""Atomic file writes: the file at ``path`` is either the old one or the complete new one.

The data goes to a temporary file in the same folder (same file system, so the final rename
is atomic), is flushed and fsync'ed, and then ``os.replace``-d over ``path``; the folder is
fsync'ed too so the rename survives a power cut. Any failure while writing (ENOSPC, a
KeyboardInterrupt, an exception of the writer) removes the temporary file and leaves
``path`` as it was. A SIGKILL can leave only a hidden ``.<name>.tmp-*`` file, never a torn
``path``.
"""

import contextlib
import os
import tempfile

__all__ = [
    "atomic_open",
    "atomic_write_text",
    "is_atomic_temporary",
    "remove_stale_temporaries",
    "TEMP_INFIX",
]

#: What :func:`atomic_open`'s temporary files are named: ``.<name>.tmp-<random>``.
TEMP_INFIX = ".tmp-"


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds: the data itself is synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """``with atomic_open(path, "wb") as f: ...`` writes ``path`` atomically.

    ``mode`` is "w" (text, UTF-8) or "wb". The new file gets the permissions a plain
    ``open(path, "w")`` would give it (umask applied), not mkstemp's 0600.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}{TEMP_INFIX}")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            fd = None  # owned by f now
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def is_atomic_temporary(name):
    """Whether the file name ``name`` is that of an :func:`atomic_open` temporary."""
    return name.startswith(".") and TEMP_INFIX in name[1:]


def remove_stale_temporaries(folder):
    """Remove the :func:`atomic_open` temporaries in ``folder`` (left by a SIGKILL during a
    write); returns their paths. Only for a folder this process holds
    (``jsis_d2.utils.folder_lock``): another writer's temporary would be in use."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if is_atomic_temporary(name) and os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(path)
    return removed
