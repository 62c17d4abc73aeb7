"""NYUv2 and Cityscapes in the preprocessed ``.npy`` layout of MTAN (Liu et al. 2019) and LibMTL, which
users download themselves:

    root/{train,val}/image/{i}.npy    H x W x 3 float in [0, 1]
    root/{train,val}/label/{i}.npy    H x W semantic class, -1 = ignore
    root/{train,val}/depth/{i}.npy    H x W x 1 depth (NYUv2) or inverse depth (Cityscapes), 0 = invalid
    root/{train,val}/normal/{i}.npy   H x W x 3 unit normals, 0 = invalid (NYUv2 only)

with i = 0 .. n − 1. NYUv2: 13 classes, 288 x 384, 795 train / 654 val; Cityscapes: 7 classes, 128 x 256,
2975 train / 500 val. As in MTAN and LibMTL the published ``val`` split is the test split; our validation
split (model selection) is ``val_fraction`` of the training images (seeded). ``max_samples`` caps each
published split (a quick look, or memory on small machines). Training on them is a GPU job: see the
README (``device: cuda``, ``amp: true``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.files import DataFileError
from polytask.data.registry import register
from polytask.dense import DenseTask
from polytask.errors import PolytaskError

FOLDERS = {"seg": "label", "depth": "depth", "normals": "normal"}


def _count(folder: Path) -> int:
    if not folder.is_dir():
        raise DataFileError(
            f"{folder} not found: expected the MTAN/LibMTL .npy layout (see polytask.data.dense_benchmarks)"
        )
    names = sorted(p.stem for p in folder.glob("*.npy"))
    if not names:
        raise DataFileError(f"{folder} holds no .npy files")
    if sorted(names, key=lambda s: (len(s), s)) != [str(i) for i in range(len(names))]:
        raise DataFileError(f"{folder}: files must be named 0.npy .. {len(names) - 1}.npy")
    return len(names)


def _read_npy(path: Path) -> np.ndarray:
    """A numeric array from a ``.npy`` file (never a pickle); anything else is a :class:`DataFileError`."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npy file of numbers ({exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: not a .npy file of numbers (dtype {getattr(array, 'dtype', type(array))})")
    return array


def _load(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = _read_npy(path)
    if array.ndim == len(shape) + 1 and array.shape[-1] == 1 and what != "normals":
        array = array[..., 0]
    if array.shape != shape:
        raise DataFileError(f"{path}: {what} has shape {array.shape}, expected {shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # invalid pixels use 0 / -1, never NaN
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise DataFileError(
            f"{path}: {what} holds NaN or inf (first at index {index}); mark invalid pixels as the layout does "
            "(depth and normals 0, labels -1)"
        )
    return array


def read_npy_split(root: Path, split: str, tasks: Sequence[str], max_samples: int | None) -> Split:
    """One published split (``train`` or ``val``) as a :class:`Split`, channels first."""
    base = Path(root) / split
    n = _count(base / "image")
    for task in tasks:
        m = _count(base / FOLDERS[task])
        if m != n:
            raise DataFileError(f"{base / FOLDERS[task]} has {m} files but {base / 'image'} has {n}")
    n = min(n, max_samples) if max_samples else n
    first = _read_npy(base / "image" / "0.npy")
    if first.ndim != 3 or first.shape[-1] != 3:
        raise DataFileError(f"{base / 'image' / '0.npy'}: an image must be H x W x 3, got {first.shape}")
    h, w = first.shape[:2]
    images = np.stack([_load(base / "image" / f"{i}.npy", (h, w, 3), "image") for i in range(n)]).astype(np.float32)
    targets: dict[str, torch.Tensor] = {}
    if "seg" in tasks:
        labels = np.stack([_load(base / "label" / f"{i}.npy", (h, w), "label") for i in range(n)])
        targets["seg"] = torch.from_numpy(np.rint(labels).astype(np.int64))
    if "depth" in tasks:
        depth = np.stack([_load(base / "depth" / f"{i}.npy", (h, w), "depth") for i in range(n)]).astype(np.float32)
        targets["depth"] = torch.from_numpy(depth)
    if "normals" in tasks:
        normals = np.stack([_load(base / "normal" / f"{i}.npy", (h, w, 3), "normals") for i in range(n)])
        targets["normals"] = torch.from_numpy(normals.astype(np.float32).transpose(0, 3, 1, 2).copy())
    return Split(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), targets)


def _carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    n = len(train)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise PolytaskError(f"val_fraction {fraction} leaves no training images out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pick = lambda idx: Split(train.inputs[idx], {k: v[idx] for k, v in train.targets.items()})  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


def _dataset(name, root, tasks, val_fraction, seed, max_samples, recommended) -> MultiTaskData:
    if not 0 < val_fraction < 1:
        raise PolytaskError(f"{name}: val_fraction must be in (0, 1), got {val_fraction}")
    names = [t.name for t in tasks]
    root = Path(root).expanduser()
    train = read_npy_split(root, "train", names, max_samples)
    test = read_npy_split(root, "val", names, max_samples)
    if train.inputs.shape[1:] != test.inputs.shape[1:]:
        raise DataFileError(f"{name}: train images {tuple(train.inputs.shape[1:])} and val images differ in size")
    train, val = _carve_validation(train, val_fraction, seed)
    info = {"root": str(root), "published_val_is_test": True, "train_defaults": recommended}
    return MultiTaskData(name, list(tasks), tuple(train.inputs.shape[1:]), train, val, test, info)


@register("nyuv2", "NYUv2 (MTAN/LibMTL .npy layout, user-downloaded): 13-class segmentation, depth, normals")
def nyuv2(path: str, val_fraction: float = 0.1, seed: int = 0, max_samples: int | None = None) -> MultiTaskData:
    tasks = [
        DenseTask("seg", "segmentation", 13, ignore_index=-1),
        DenseTask("depth", "depth"),
        DenseTask("normals", "normals"),
    ]
    # LibMTL's NYUv2 setting: Adam 1e-4, batch 8, 200 epochs
    return _dataset("nyuv2", path, tasks, val_fraction, seed, max_samples, {"epochs": 200, "batch_size": 8, "lr": 1e-4})


@register("cityscapes", "Cityscapes (MTAN/LibMTL .npy layout, user-downloaded): 7-class segmentation, inverse depth")
def cityscapes(path: str, val_fraction: float = 0.1, seed: int = 0, max_samples: int | None = None) -> MultiTaskData:
    tasks = [DenseTask("seg", "segmentation", 7, ignore_index=-1), DenseTask("depth", "depth")]
    # LibMTL's Cityscapes setting: Adam 1e-4, batch 64, 200 epochs
    return _dataset(
        "cityscapes", path, tasks, val_fraction, seed, max_samples, {"epochs": 200, "batch_size": 64, "lr": 1e-4}
    )


def export_npy(data: MultiTaskData, root: str | Path, ignore_index: int = -1) -> Path:
    """Write a dense dataset (e.g. ``scenes``) in the MTAN/LibMTL layout: its train split as ``train/``,
    its test split as ``val/``, ignored labels as ``ignore_index``. Handy to try the NYUv2 pipeline (and a
    GPU) on generated data."""
    root = Path(root)
    for split_name, split in (("train", data.train), ("val", data.test)):
        for folder in ("image", *(FOLDERS[t] for t in FOLDERS if t in split.targets)):
            (root / split_name / folder).mkdir(parents=True, exist_ok=True)
        for i in range(len(split)):
            np.save(root / split_name / "image" / f"{i}.npy", split.inputs[i].permute(1, 2, 0).numpy())
            if "seg" in split.targets:
                seg_task = data.task("seg")
                label = split.targets["seg"][i].numpy()
                np.save(
                    root / split_name / "label" / f"{i}.npy",
                    np.where(label == seg_task.ignore_index, ignore_index, label).astype(np.float32),
                )
            if "depth" in split.targets:
                np.save(root / split_name / "depth" / f"{i}.npy", split.targets["depth"][i].numpy()[..., None])
            if "normals" in split.targets:
                np.save(root / split_name / "normal" / f"{i}.npy", split.targets["normals"][i].permute(1, 2, 0).numpy())
    return root
