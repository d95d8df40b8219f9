"""imagefolder with tiny generated PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autokd import data
from autokd.errors import ConfigError, DataError

CLASSES = ("ant", "bee", "cat")


def make_split(root: Path, split: str, per_class: int, classes=CLASSES, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
            arr[..., k % 3] = 255  # class colour
            mode = "L" if i == 0 else "RGB"  # a greyscale file is converted to RGB
            img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode)
            img.save(d / f"{i:02d}.png")
        (d / "notes.txt").write_text("not an image")


def test_train_only_carves_val_and_test(tmp_path):
    make_split(tmp_path, "train", 10)
    b = data.create("imagefolder", root=tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2, image_size=16)
    assert b.num_classes == 3 and b.input_shape == (3, 16, 16) and b.deterministic_train is False
    assert b.info["classes"] == list(CLASSES)
    assert b.sizes == {"train": 18, "val": 6, "test": 6}
    paths = {s: {p for p, _ in getattr(b, s).samples} for s in ("train", "val", "test")}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"]
    assert not paths["val"] & paths["test"]
    assert all(p.endswith(".png") for s in paths.values() for p in s)
    for split in ("val", "test"):
        assert np.bincount(getattr(b, split).targets).tolist() == [2, 2, 2]
    for split in ("train", "val", "test", "train_eval"):
        x, y = b.dataset(split)[0]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y in (0, 1, 2)
    assert b.train_eval.samples == b.train.samples
    # eval transform deterministic; labels follow the folder
    assert torch.equal(b.val[0][0], b.val[0][0])
    for p, y in b.val.samples:
        assert Path(p).parent.name == CLASSES[y]
    x, y, idx = next(iter(b.loader("train", 8, seed=0)))
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.int64 and len(idx) == 8
    assert (
        data.create("imagefolder", root=tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2).info[
            "fingerprint"
        ]
        != data.create("imagefolder", root=tmp_path, seed=1, val_fraction=0.2, test_fraction=0.2).info[
            "fingerprint"
        ]
    )


def test_val_folder_used_and_test_carved(tmp_path):
    make_split(tmp_path, "train", 8)
    make_split(tmp_path, "val", 2, classes=("ant", "cat"), seed=1)  # a class may be missing from val/
    b = data.create("imagefolder", root=tmp_path, test_fraction=0.25)
    assert b.info["val_source"] == "val/" and b.info["test_source"] == "carved from train/"
    assert b.sizes == {"train": 18, "val": 4, "test": 6}
    assert sorted(set(b.val.targets.tolist())) == [0, 2]  # train's class indices, not val's own
    assert b.input_shape == (3, 32, 32) and b.val[0][0].shape == (3, 32, 32)


def test_all_folders_present(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        make_split(tmp_path, split, n)
    b = data.create("imagefolder", root=tmp_path, train_fraction=0.5)
    assert b.sizes == {"train": 6, "val": 6, "test": 9}
    assert b.info["val_fraction"] is None and b.info["test_fraction"] is None


def test_val_with_unknown_class(tmp_path):
    make_split(tmp_path, "train", 4)
    make_split(tmp_path, "val", 1, classes=("ant", "dog"))
    with pytest.raises(DataError, match=r"class folder\(s\) dog that train/ lacks"):
        data.create("imagefolder", root=tmp_path)


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError) as ei:
        data.create("imagefolder", root=tmp_path / "missing")
    assert str(tmp_path / "missing") in str(ei.value) and "train/<class>/<image>" in str(ei.value)
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found under"):
        data.create("imagefolder", root=tmp_path)
    with pytest.raises(ConfigError, match="data.root is required for imagefolder"):
        data.create("imagefolder")
    with pytest.raises(ConfigError, match="data.image_size must be a positive integer"):
        data.create("imagefolder", root=tmp_path, image_size=0)
