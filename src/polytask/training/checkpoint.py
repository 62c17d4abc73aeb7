"""Checkpoints: written atomically, loaded with clear errors, RNG states included."""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polytask.errors import CheckpointError
from polytask.utils import atomic_write

# 2: the torch.save payload wrapped with its SHA-256 (a flipped byte inside tensor data loaded silently);
# 1: the bare payload (still read, without the check)
FORMAT_VERSION = 2


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states, as tensors and plain types (loadable weights_only)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save ``state`` to ``path``: its ``torch.save`` bytes with their SHA-256, so that a changed
    byte anywhere (tensor data included) is found on load."""
    payload = io.BytesIO()  # serialise in memory, then one write: half the cost of torch.save to a file
    torch.save({"format_version": FORMAT_VERSION, **state}, payload)
    data = payload.getbuffer()
    outer = io.BytesIO()
    wrapped = {
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(data).hexdigest(),
        "payload": torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.zeros(0, dtype=torch.uint8),
    }
    torch.save(wrapped, outer)
    atomic_write(path, lambda f: f.write(outer.getbuffer()))


def _torch_load(source: Any, path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; a missing file, a corrupt one or one whose
    contents no longer match their checksum raise :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = _torch_load(path, path, "cpu")
    if isinstance(state, dict) and state.get("format_version") == FORMAT_VERSION and "payload" in state:
        payload = state["payload"]
        if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
            raise CheckpointError(f"checkpoint {path} is not a polytask checkpoint (bad payload)")
        data = payload.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != state.get("sha256"):
            raise CheckpointError(
                f"checkpoint {path} does not match its checksum: it was changed or damaged after it was written"
            )
        state = _torch_load(io.BytesIO(data), path, map_location)
    elif map_location != "cpu" and isinstance(state, dict):  # a format-1 file: load it again where asked
        state = _torch_load(path, path, map_location)
    if not isinstance(state, dict) or state.get("format_version") not in (1, FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {path} is not a polytask checkpoint (format {FORMAT_VERSION})")
    return state


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    """Raise :class:`CheckpointError` listing the ``keys`` that ``state`` lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: it was not written by this Trainer")
