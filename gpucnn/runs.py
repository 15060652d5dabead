"""The run folder of gpucnn-train: one training run at a time, and a finished run is never lost.

`claim` makes the folder, locks it for the life of the run (a second run into the same
folder is refused, rather than interleaving its rows into metrics.csv) and refuses to start
a fresh run over a folder holding a checkpoint unless told to replace it. Even then the
earlier run's files stay until the new run has saved its first checkpoint
(`replace_earlier_run`), so a run killed in its first seconds costs nothing.
"""
import contextlib
import fcntl
import os

from . import checkpoint

LOCK_FILE = ".lock"


class RunFolderError(ValueError):
    """The run folder cannot be used: locked by another run, not a folder, or holding a run."""


@contextlib.contextmanager
def claim(out, resume, overwrite):
    """Hold `out` for the run inside the with-block (resuming it, or replacing it only if `overwrite`)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunFolderError(f"--out {out} is a file; the run folder must be a folder (or not exist yet)")
    try:
        os.makedirs(out, exist_ok=True)
        fd = os.open(os.path.join(out, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunFolderError(f"cannot write to the run folder {out}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(
                f"{out} is in use by another training run (pid {owner}); wait for it to finish "
                f"or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        earlier = checkpoint.latest(out)
        if earlier is not None and not resume and not overwrite:
            raise RunFolderError(
                f"{out} holds a finished or interrupted run (checkpoint {os.path.basename(earlier)}): "
                f"--resume continues it, --overwrite replaces it once the new run has saved its "
                f"first epoch, or choose another --out")
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def writing(out):
    """Writes into `out`: a full or read-only disk becomes a RunFolderError, one line for the user."""
    try:
        yield
    except OSError as e:
        raise RunFolderError(f"cannot write the run in {out}: {e}") from None


def replace_earlier_run(out, outputs):
    """Remove an earlier run's `outputs` (file names in `out`), once the new run's first
    checkpoint is in place; the checkpoint's save has already dropped the earlier epochs."""
    for name in outputs:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
