"""Files that other processes read while gpucnn writes them: atomic writes, and the folders in
the user's cache where gpucnn keeps what it builds once per machine (the GPU's kernel modules,
the emulator's libraries, the NVRTC builds that CI checks)."""
import os
import tempfile
from pathlib import Path


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write bytes to path: a temporary file of its own in the same folder, fsync, rename over
    path. Readers see the old file or the new one, never part of one, even while several
    processes (the ranks of a run) write the same path at once."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         delete=False) as f:
            tmp = f.name
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:  # a full or read-only disk: leave no half-written file behind
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def cache_dir(name, variable):
    """$variable when set, else gpucnn/<name> in the user's cache directory ($XDG_CACHE_HOME,
    else ~/.cache); created. One it cannot create raises OSError, which the caller words."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpucnn" / name
    path = Path(os.environ.get(variable) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path
