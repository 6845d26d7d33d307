"""One process at a time: a lock file that the processes of a distributed run (or any two commands) take
before building what they would otherwise all build at once, such as the audio cache or the demo set."""
import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows, where runs are single-process
    fcntl = None


@contextlib.contextmanager
def exclusive(lock_path):
    """Hold the lock ``lock_path`` (created if missing, never deleted: a file another process may be
    waiting on) for the ``with`` block; other processes block until it is released."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def replace_atomically(path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
