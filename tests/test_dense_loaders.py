"""NYUv2 / Cityscapes loaders on fixture files of the MTAN/LibMTL .npy layout."""

import numpy as np
import pytest
import torch

import polytask as pt
from polytask.data.dense_benchmarks import export_npy
from polytask.data.files import DataFileError


def write_fixture(root, n_train=5, n_val=3, h=8, w=12, normals=True):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in ("image", "label", "depth", *(("normal",) if normals else ())):
            (root / split / folder).mkdir(parents=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((h, w, 3), dtype=np.float32))
            label = rng.integers(-1, 13, (h, w)).astype(np.float32)  # float labels, as in the published files
            np.save(root / split / "label" / f"{i}.npy", label)
            depth = rng.random((h, w, 1), dtype=np.float32) + 0.5
            depth[0, 0] = 0.0  # invalid
            np.save(root / split / "depth" / f"{i}.npy", depth)
            if normals:
                n_ = rng.normal(size=(h, w, 3)).astype(np.float32)
                n_ /= np.linalg.norm(n_, axis=-1, keepdims=True)
                n_[1, 1] = 0.0
                np.save(root / split / "normal" / f"{i}.npy", n_)


def test_nyuv2_reads_the_layout(tmp_path):
    write_fixture(tmp_path)
    data = pt.data.create("nyuv2", path=str(tmp_path), val_fraction=0.2)
    assert [t.name for t in data.tasks] == ["seg", "depth", "normals"] and data.input_shape == (3, 8, 12)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 3)
    seg = data.task("seg")
    assert data.train.targets["seg"].dtype == torch.int64 and seg.ignore_index == -1 and seg.out_features == 13
    assert data.train.targets["normals"].shape == (4, 3, 8, 12)
    assert not seg.valid_mask(data.test.targets["seg"]).all()  # the -1 pixels are ignored
    assert not data.task("depth").valid_mask(data.test.targets["depth"])[:, 0, 0].any()
    assert not data.task("normals").valid_mask(data.test.targets["normals"])[:, 1, 1].any()
    # trains end to end
    model = pt.models.create("hps_resnet", tasks=data.tasks, input_shape=data.input_shape)
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    result = pt.Trainer(model, data.tasks, balancer, data.train, data.val, data.test, epochs=1, progress=False).fit()
    assert set(result.test_scores["normals"]) >= {"mean_angle", "within_30"}


def test_cityscapes_and_layout_errors(tmp_path):
    write_fixture(tmp_path / "cs", normals=False)
    data = pt.data.create("cityscapes", path=str(tmp_path / "cs"))
    assert [t.name for t in data.tasks] == ["seg", "depth"]
    with pytest.raises(DataFileError, match=r"image.*not found"):
        pt.data.create("nyuv2", path=str(tmp_path / "missing"))
    with pytest.raises(DataFileError, match=r"normal.*not found"):
        pt.data.create("nyuv2", path=str(tmp_path / "cs"))
    (tmp_path / "cs" / "val" / "depth" / "2.npy").unlink()
    with pytest.raises(DataFileError, match="has 2 files"):
        pt.data.create("cityscapes", path=str(tmp_path / "cs"))
    with pytest.raises(pt.errors.ConfigError, match="needs option"):
        pt.data.create("nyuv2")


def test_scenes_export_round_trips_through_the_nyuv2_loader(tmp_path):
    scenes = pt.data.create("scenes", n_train=6, n_val=2, n_test=3, size=16)
    export_npy(scenes, tmp_path)
    data = pt.data.create("nyuv2", path=str(tmp_path), val_fraction=0.5)
    assert torch.allclose(data.test.inputs, scenes.test.inputs)
    labels = scenes.test.targets["seg"]
    assert torch.equal(data.test.targets["seg"], torch.where(labels == 255, -1, labels))
    assert torch.allclose(data.test.targets["depth"], scenes.test.targets["depth"])
    assert torch.allclose(data.test.targets["normals"], scenes.test.targets["normals"])


@pytest.mark.parametrize(
    ("folder", "what"), [("image", "image"), ("depth", "depth"), ("normal", "normals"), ("label", "label")]
)
def test_a_nan_pixel_is_an_error_naming_file_and_index(tmp_path, folder, what):
    write_fixture(tmp_path)
    path = tmp_path / "train" / folder / "2.npy"
    array = np.load(path)
    array[3, 4] = np.nan
    np.save(path, array)
    with pytest.raises(DataFileError, match=rf"2\.npy: {what} holds NaN or inf \(first at index \(3, 4"):
        pt.data.create("nyuv2", path=str(tmp_path))


@pytest.mark.parametrize("content", ["pickle", "garbage", "strings"])
def test_a_pickled_or_garbage_npy_is_a_clear_error(tmp_path, content):
    write_fixture(tmp_path)
    path = tmp_path / "train" / "image" / "0.npy"
    if content == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "garbage":
        path.write_bytes(b"\x93NUMPY garbage that is not an array header")
    else:
        np.save(path, np.array([["a", "b", "c"]]))
    with pytest.raises(DataFileError, match=r"0\.npy: not a (readable )?\.npy file of numbers"):
        pt.data.create("nyuv2", path=str(tmp_path))


def test_the_dense_loaders_expand_the_home_directory(tmp_path, monkeypatch):
    write_fixture(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(pt.data.create("cityscapes", path="~").test) == 3
