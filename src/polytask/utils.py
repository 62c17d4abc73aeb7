"""Small shared helpers: seeding, device choice, atomic file writes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from polytask.errors import PolytaskError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_group() -> tuple[int, int] | None:
    """(rank, size) of the initialised torch.distributed process group; None outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def launched_processes() -> int:
    """How many processes torchrun (or any launcher setting WORLD_SIZE) started for this job; 1 without."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is checked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PolytaskError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PolytaskError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files that writes of ``path`` by processes no longer alive left behind (a kill
    between the temporary file and the rename; each can be checkpoint-sized)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        if parts and parts[0].isdigit() and int(parts[0]) != os.getpid() and not _process_alive(int(parts[0])):
            tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, then rename over the target:
    readers see the old file or the new one, never half of one. The file gets the permissions the umask
    gives a new file (not the temporary file's 0600), and temporary files of earlier writes of ``path``
    by processes that were killed are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: str | Path, what: str) -> Path:
    """Create ``directory`` if needed and prove that a file can be written there, before any work whose
    results would go there; a :class:`PolytaskError` naming the path and the reason otherwise."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PolytaskError(f"{what} {directory} is not a writable directory ({exc.strerror or exc})") from None
    return directory


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its ``.lock`` file) while the block runs; a second process
    asking for it gets a :class:`PolytaskError` at once instead of interleaving its files with the first's.
    The lock goes with the process, however it ends."""
    path = Path(directory) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PolytaskError(f"{directory} is in use by {holder}: run {what} with another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"polytask process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def files_fingerprint(path: str | Path) -> str:
    """A hash of the names, sizes and modification times of the files at ``path`` (a file, or every file
    below a directory): cheap (no file is read), and it changes when a file is replaced, edited or added.
    Empty when nothing is there (the loader then says what is missing)."""
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(
            f"{file.relative_to(root) if file != root else file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16] if files else ""


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN written as null)."""
    text = json.dumps(_nan_to_none(obj), indent=2, sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
