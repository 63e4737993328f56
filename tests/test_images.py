"""Image loaders on data the tests generate, the seeded subsets, and the augmentation."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from growcore import images
from growcore.images import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataNotFoundError,
    ImageSplit,
    Standardize,
    augment_cifar,
    subset_indices,
)

JPEG_TOLERANCE = 3  # grey levels: JPEG of a uniform colour decodes within a few levels
RESIZE_TOLERANCE = 2  # grey levels: bilinear resizing of a uniform region
FLOAT_TOLERANCE = 1e-6
N_PER_CLASS = {"train": 3, "test": 2}
TINY_CLASSES = CIFAR10_CLASSES[:4]


def colour(label: int, index: int) -> tuple[int, int, int]:
    """A distinct uniform colour for image ``index`` of class ``label``."""
    return (40 * label + 10, 20 * index + 5, 200 - 30 * label)


@pytest.fixture
def jpeg_archive(tmp_path, monkeypatch):
    """A CIFAR-10 archive with the real layout, a few uniform images per class."""
    monkeypatch.setattr(images, "CIFAR10_PER_CLASS", None)  # not all of CIFAR-10
    path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for part, n in N_PER_CLASS.items():
            for label, name in enumerate(TINY_CLASSES):
                for index in range(n):
                    buffer = io.BytesIO()
                    Image.new("RGB", (32, 32), colour(label, index)).save(buffer, "JPEG",
                                                                          quality=95)
                    member = tarfile.TarInfo(f"cifar10-jpeg/{part}/{name}/{index:04d}.jpg")
                    member.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(member, buffer)
    return path


def test_cifar10_decodes_the_archive_and_reuses_the_cache(jpeg_archive, tmp_path):
    root = tmp_path / "cache"
    split = images.cifar10(root=root, archive=jpeg_archive)
    n_train = N_PER_CLASS["train"] * len(TINY_CLASSES)
    assert split.X_train.shape == (n_train, 3, 32, 32) and split.X_train.dtype == torch.uint8
    assert split.y_train.dtype == torch.int64 and split.X_val is None
    assert split.classes == CIFAR10_CLASSES and "JPEG" in split.source
    # images are ordered by (class, file name): check each one's colour and label
    for i, (X, y) in enumerate(zip(split.X_train, split.y_train)):
        label, index = divmod(i, N_PER_CLASS["train"])
        assert int(y) == label
        expected = torch.tensor(colour(label, index), dtype=torch.int16).view(3, 1, 1)
        assert (X.to(torch.int16) - expected).abs().max() <= JPEG_TOLERANCE
    assert (root / images.JPEG_CACHE).exists()
    again = images.cifar10(root=root, archive=tmp_path / "gone.tar.gz")  # cache only
    assert "cache" in again.source
    assert torch.equal(again.X_train, split.X_train) and torch.equal(again.y_test, split.y_test)


def test_cifar10_archive_from_the_environment(jpeg_archive, tmp_path, monkeypatch):
    monkeypatch.setenv(images.ARCHIVE_ENV, str(jpeg_archive))
    monkeypatch.setenv("GROWCORE_DATA", str(tmp_path / "data"))
    split = images.cifar10(n_test=3)
    assert len(split.y_test) == 3
    assert (tmp_path / "data" / "cifar10" / images.JPEG_CACHE).exists()


def test_missing_cifar10_names_every_way_to_provide_it(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        images.cifar10(root=tmp_path / "empty", archive=tmp_path / "none.tar.gz")
    message = str(error.value)
    for hint in ("archive=", images.ARCHIVE_ENV, "download=True", "none.tar.gz"):
        assert hint in message
    with pytest.raises(ValueError, match="exceeds"):
        images.cifar10(root=tmp_path / "empty", archive=tmp_path / "none.tar.gz",
                       n_train=45_000, n_val=10_000)


def test_subsets_are_disjoint_reproducible_and_nested():
    a = subset_indices(100, 50, n_train=30, n_val=20, n_test=10, seed=3)
    assert len(a["train"]) == 30 and len(a["val"]) == 20 and len(a["test"]) == 10
    assert not set(a["train"]) & set(a["val"])
    b = subset_indices(100, 50, n_train=30, n_val=20, n_test=10, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = subset_indices(100, 50, n_train=30, n_val=20, n_test=10, seed=4)
    assert not np.array_equal(a["train"], c["train"])
    larger = subset_indices(100, 50, n_train=60, n_val=20, n_test=None, seed=3)
    assert np.array_equal(larger["val"], a["val"])  # the hold-out does not depend on n_train
    assert set(a["train"]) <= set(larger["train"])
    assert np.array_equal(larger["test"], np.arange(50))
    everything = subset_indices(100, 50, n_train=None, n_val=20, n_test=None, seed=3)
    assert sorted([*everything["train"], *everything["val"]]) == list(range(100))


def test_cifar10_validation_hold_out(jpeg_archive, tmp_path):
    split = images.cifar10(root=tmp_path / "c", archive=jpeg_archive, n_train=5, n_val=4,
                           seed=1)
    assert len(split.y_train) == 5 and len(split.y_val) == 4
    # every image has a distinct colour: train and validation images must all differ
    pixels = lambda X: {tuple(x[:, 0, 0].tolist()) for x in X}  # noqa: E731
    assert not pixels(split.X_train) & pixels(split.X_val)
    moved = split.to("cpu")
    assert isinstance(moved, ImageSplit) and torch.equal(moved.X_val, split.X_val)
    assert moved.classes == split.classes and "val 4" in split.describe()
    floats = split.to("cpu", torch.float32)
    assert torch.allclose(floats.X_val * 255, split.X_val.float(), atol=FLOAT_TOLERANCE * 255)
    assert floats.y_val.dtype == torch.int64
    standardize = Standardize()
    assert torch.allclose(standardize(floats.X_train), standardize(split.X_train),
                          atol=FLOAT_TOLERANCE)


def write_cifar100(root, n_train=6, n_test=4, seed=0):
    """The CIFAR-100 python release's layout and pickle keys, with random pixels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for part, n in (("train", n_train), ("test", n_test)):
        X = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        with open(folder / part, "wb") as f:
            pickle.dump({"data": X.reshape(n, 3072), "fine_labels": fine,
                         "coarse_labels": coarse}, f)
        truth[part] = (X, fine, coarse)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{k}" for k in range(100)],
                     "coarse_label_names": [f"coarse{k}" for k in range(20)]}, f)
    return truth


def test_cifar100_reads_the_python_release(tmp_path):
    truth = write_cifar100(tmp_path)
    split = images.cifar100(root=tmp_path, n_val=2, seed=5)
    index = subset_indices(6, 4, None, 2, None, 5)
    X, fine, _ = truth["train"]
    assert torch.equal(split.X_train, torch.from_numpy(X[index["train"]]))
    assert torch.equal(split.X_val, torch.from_numpy(X[index["val"]]))
    assert split.y_train.tolist() == [fine[i] for i in index["train"]]
    assert len(split.classes) == 100
    coarse = images.cifar100(root=tmp_path, labels="coarse")
    assert coarse.y_test.tolist() == truth["test"][2] and len(coarse.classes) == 20
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        images.cifar100(root=tmp_path / "nothing")


def write_image_folder(root, classes=("n01", "n02"), per_class=3):
    """An ImageFolder tree of 48x16 PNGs: left half the class colour, right half blue."""
    for part in ("train", "val"):
        for label, name in enumerate(classes):
            (root / part / name).mkdir(parents=True)
            for i in range(per_class):
                image = Image.new("RGB", (48, 16), (0, 0, 255))
                image.paste((200, 50 * label, 0), (0, 0, 24, 16))
                image.save(root / part / name / f"{i}.png")


def test_imagenet_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    write_image_folder(tmp_path)
    split = images.imagenet(tmp_path, size=8, n_val=1, seed=0)
    assert split.X_train.shape == (5, 3, 8, 8) and len(split.y_val) == 1
    assert split.classes == ("n01", "n02") and len(split.y_test) == 6
    # 48x16 -> 24x8, centre crop keeps columns 8..15: class colour left, blue right
    for X, y in zip(split.X_test, split.y_test):
        left = torch.tensor((200, 50 * int(y), 0)).view(3, 1)
        assert (X[:, :, 0].int() - left).abs().max() <= RESIZE_TOLERANCE
        assert (X[:, :, 7].int() - torch.tensor((0, 0, 255)).view(3, 1)).abs().max() \
            <= RESIZE_TOLERANCE
    with pytest.raises(DataNotFoundError, match="ImageFolder"):
        images.imagenet(tmp_path / "nothing")


def all_crops(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every window an augmentation may return for ``image``, enumerated by hand."""
    _, h, w = image.shape
    padded = torch.zeros(3, h + 2 * padding, w + 2 * padding, dtype=image.dtype)
    padded[:, padding:padding + h, padding:padding + w] = image
    crops = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            crops += [crop, crop.flip(2)]
    return crops


def test_augmentation_returns_padded_crops_and_flips():
    image = torch.arange(3 * 4 * 5, dtype=torch.uint8).view(3, 4, 5) + 1  # all pixels > 0
    X = image.expand(400, 3, 4, 5).contiguous()
    out = augment_cifar(X, torch.Generator().manual_seed(0), padding=1)
    assert out.shape == X.shape and out.dtype == torch.uint8
    crops = all_crops(image, padding=1)
    seen = [next(k for k, crop in enumerate(crops) if torch.equal(crop, x)) for x in out]
    assert set(seen) == set(range(len(crops)))  # every offset and both flips occur
    again = augment_cifar(X, torch.Generator().manual_seed(0), padding=1)
    assert torch.equal(out, again)


def test_augmentation_without_padding_only_flips():
    X = torch.randint(0, 256, (64, 3, 6, 6), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(1))
    out = augment_cifar(X, torch.Generator().manual_seed(2), padding=0)
    same = (out == X).flatten(1).all(1)
    flipped = (out == X.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all()) and same.any() and flipped.any()
    unflipped = augment_cifar(X, torch.Generator().manual_seed(2), padding=0, flip=False)
    assert torch.equal(unflipped, X)


def test_standardize_accepts_uint8_and_unit_floats():
    standardize = Standardize()
    full = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expected = ((1 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)).view(1, 3, 1, 1)
    assert torch.allclose(standardize(full), expected.expand(1, 3, 2, 2), atol=FLOAT_TOLERANCE)
    assert torch.allclose(standardize(torch.ones(1, 3, 2, 2)), standardize(full),
                          atol=FLOAT_TOLERANCE)
    last = Standardize(channels_last=True)(full)
    assert last.is_contiguous(memory_format=torch.channels_last)
