"""Stored augmented views for file datasets (CIFAR's pad-crop+flip, an image folder's resized-crop+flip): the
parameterised transforms are torchvision's own draw for draw, the loader serves exactly the stored views, and
the teacher's cached outputs equal the online teacher's on them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from autokd import Distiller, data, models
from autokd.data.pil_augment import PadCropFlip, ResizedCropFlip, ViewTransform
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import OnlineTeacher, Trainer, make_teacher_source
from autokd.train.views import FileViewsLoader, ViewsTeacher

CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def _post():
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


def test_pad_crop_flip_is_torchvisions_random_crop_and_flip_draw_for_draw():
    ours = ViewTransform(PadCropFlip(32, pad=4), _post(), "post")
    theirs = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), _post()])
    img = _image(32, 32)
    for seed in range(40):
        torch.manual_seed(seed)
        a = ours(img)
        torch.manual_seed(seed)
        assert torch.equal(a, theirs(img))


@pytest.mark.parametrize("size", [(40, 30), (12, 80), (100, 100), (24, 24)])
def test_resized_crop_flip_is_torchvisions_random_resized_crop_draw_for_draw(size):
    ours = ViewTransform(ResizedCropFlip(16), _post(), "post")
    theirs = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(), _post()])
    img = _image(*size, seed=1)
    for seed in range(40):
        torch.manual_seed(seed)
        a = ours(img)
        torch.manual_seed(seed)
        torch.testing.assert_close(a, theirs(img), rtol=0, atol=0)


def test_batched_view_draws_follow_the_per_image_distribution():
    """``sample_batch`` (used to draw the stored views) against torchvision's per-call ``get_params``: every box
    inside its image, and the same mean area fraction, aspect and flip rate within sampling noise."""
    view = ResizedCropFlip(16)
    sizes = torch.tensor([[40, 30]] * 4000 + [[12, 80]] * 4000)
    p = view.sample_batch(sizes, torch.Generator().manual_seed(0))
    top, left, h, w, flip = p.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= sizes[:, 1]).all() and (left + w <= sizes[:, 0]).all()
    torch.manual_seed(0)
    for (width, height), rows in (((40, 30), slice(0, 4000)), ((12, 80), slice(4000, 8000))):
        img = _image(width, height)
        ref = torch.tensor([T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
        area = (h[rows] * w[rows]).double() / (width * height)
        ref_area = (ref[:, 2] * ref[:, 3]).double() / (width * height)
        assert abs(area.mean() - ref_area.mean()) < 0.02
        assert abs((w[rows] / h[rows]).double().mean() - (ref[:, 3] / ref[:, 2]).double().mean()) < 0.03
    assert abs(flip.double().mean() - 0.5) < 0.02
    crop = PadCropFlip(32, pad=4).sample_batch(torch.tensor([[32, 32]] * 3000), torch.Generator().manual_seed(1))
    assert crop[:, :2].min() == 0 and crop[:, :2].max() == 8 and abs(crop[:, 2].double().mean() - 0.5) < 0.03
    counts = torch.bincount(crop[:, 0], minlength=9).double() / 3000  # uniform over the 9 offsets
    assert (counts - 1 / 9).abs().max() < 0.03


def _cifar(tmp_path, n=60):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(n)]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": labels}, f)
    return data.create("cifar10", root=tmp_path, train_fraction=0.3)


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, per in (("train", 12), ("val", 3), ("test", 3)):
        for c in ("a", "b", "c"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(per):
                w, h = rng.integers(10, 40, size=2)
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png")
    return data.create("imagefolder", root=tmp_path, image_size=16)


@pytest.fixture(params=["cifar10", "imagefolder"])
def bundle(request, tmp_path):
    return _cifar(tmp_path) if request.param == "cifar10" else _folder(tmp_path)


def _teacher(bundle):
    torch.manual_seed(0)
    return models.create("cnn", bundle.num_classes, in_channels=3, width=4).eval()


def test_auto_chooses_stored_views_for_augmented_file_datasets(bundle, tmp_path):
    src = make_teacher_source("auto", _teacher(bundle), bundle, CPU, cache_dir=tmp_path / "cache")
    assert isinstance(src, ViewsTeacher) and src.files and src.views == 8


def test_loader_serves_the_stored_views_and_their_teacher_outputs(bundle, tmp_path):
    teacher = _teacher(bundle)
    src = ViewsTeacher(teacher, bundle, CPU, cache_dir=tmp_path / "cache", views=3, seed=4)
    params = src.view_params()
    loader = src.train_loader(bundle, 16, seed=2)
    assert isinstance(loader, FileViewsLoader) and len(loader) == -(-len(bundle.train) // 16)
    seen = torch.zeros(len(bundle.train), 3, dtype=torch.bool)
    for _ in range(3):
        for x, _, idx in loader:
            v = src.current_view[idx]
            seen[idx, v] = True
            for row, (i, k) in enumerate(zip(idx.tolist(), v.tolist(), strict=True)):
                img, _ = bundle.train.raw(i)
                assert torch.equal(x[row], bundle.train.view_transform.render(img, params[i, k].tolist()))
            with torch.no_grad():
                torch.testing.assert_close(src.batch(x, idx).logits, teacher(x), rtol=1e-5, atol=1e-5)
    assert seen.float().mean() > 0.5
    again = ViewsTeacher(teacher, bundle, CPU, cache_dir=tmp_path / "cache", views=3, seed=4)
    assert torch.equal(again.view_params(), params)  # seeded: the same views, read back from the cache


def test_cached_view_kd_equals_online_kd_and_trains(bundle, tmp_path):
    teacher = _teacher(bundle)
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                    terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                    optim=OptimSpec(epochs=2, batch_size=16, lr=0.05), seed=0)
    src = make_teacher_source("views:2", teacher, bundle, CPU, cache_dir=tmp_path / "cache", seed=0)
    d = Distiller(teacher, models.from_spec(recipe.student, bundle.num_classes, 3), recipe,
                  input_shape=bundle.input_shape)
    online = OnlineTeacher(teacher)
    for x, y, idx in src.train_loader(bundle, 16, seed=1):
        a, b = d(x, y, teacher_outputs=src.batch(x, idx)), d(x, y, teacher_outputs=online.batch(x, idx))
        torch.testing.assert_close(a["distill"], b["distill"], rtol=1e-5, atol=1e-6)
    res = Trainer(bundle, teacher=teacher, teacher_source=src, device="cpu").fit(recipe, measure=False)
    assert len(res.history) == 2 and res.history[-1]["train_kd"] > 0
