"""Image data sets (CIFAR-10, CIFAR-100, ImageFolder/ImageNet) as in-memory splits.

Every loader returns an :class:`ImageSplit`: a :class:`growcore.data.Split` whose features are
``uint8`` images ``[N, 3, H, W]`` and whose labels are ``int64``, plus an optional validation
hold-out carved from the training set (NAGN holds out 20 %, FRAGrow 1 %). Images stay
``uint8`` in memory (CIFAR-10 is 184 MB so) and the models standardise them in their first
module, :class:`Standardize`, so the training loop needs no transform.

Subsets are drawn with NumPy's seeded PCG64 generator, so they are the same on every machine:
one permutation of the training set gives the validation images first and the training
subset next. The validation set therefore does not depend on ``n_train``, and for a fixed seed a
larger ``n_train`` gives a superset of a smaller one.

CIFAR-10 comes, in this order, from the decoded cache ``<data_dir>/cifar10/cifar10-jpeg.npz``,
from the offline JPEG archive (argument ``archive`` or ``$GROWCORE_CIFAR10_ARCHIVE``, default
``<repo>/../shared/data/cifar10-jpeg.tar.gz``), decoded once and cached, or, with
``download=True``, from torchvision's download of the original binary release. The JPEG copy
went through lossy compression: its pixels differ slightly from the original release, so
accuracies are comparable with published CIFAR-10 numbers but not bit-identical.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from growcore.data import Split
from growcore.paths import data_dir, repo_root

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images (original
# binary release, pixels scaled to [0, 1]); the JPEG copy agrees to about 2e-3.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# ImageNet statistics, the usual ones for models trained on ImageNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHIVE_ENV = "GROWCORE_CIFAR10_ARCHIVE"
JPEG_CACHE = "cifar10-jpeg.npz"
_CIFAR10_SIZES = (50_000, 10_000)  # train, test


class DataNotFoundError(FileNotFoundError):
    """A data set is neither cached, nor at the given location, nor allowed to download."""


@dataclass(frozen=True)
class ImageSplit(Split):
    """A :class:`Split` of ``uint8`` images ``[N, C, H, W]`` with a validation hold-out.

    Attributes
    ----------
    X_val, y_val : Tensor or None
        Validation images and labels, carved from the training set (disjoint from it).
    classes : tuple of str
        Class names; label ``k`` is ``classes[k]``.
    source : str
        Where the images came from (archive, cache, download) and any caveat about them.
    """

    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    classes: tuple[str, ...] = ()
    source: str = ""

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> ImageSplit:
        """The same split on ``device``; with a float ``dtype``, ``uint8`` images become
        floats in ``[0, 1]`` (the range :class:`Standardize` expects of floats). Labels kept.
        """
        def images(X: torch.Tensor | None) -> torch.Tensor | None:
            if X is None:
                return None
            moved = X.to(device=device, dtype=dtype or X.dtype)
            to_unit = dtype is not None and dtype.is_floating_point and not X.is_floating_point()
            return moved / 255 if to_unit else moved

        def labels(y: torch.Tensor | None) -> torch.Tensor | None:
            return None if y is None else y.to(device)

        return ImageSplit(images(self.X_train), labels(self.y_train), images(self.X_test),
                          labels(self.y_test), X_val=images(self.X_val),
                          y_val=labels(self.y_val), classes=self.classes, source=self.source)

    def describe(self) -> str:
        """One line: sizes of the three parts and the source."""
        sizes = [f"{name} {len(y)}" for name, y in
                 (("train", self.y_train), ("val", self.y_val), ("test", self.y_test))
                 if y is not None]
        return f"{', '.join(sizes)} images of shape {tuple(self.X_train.shape[1:])}; " \
               f"{self.source}"


class Standardize(nn.Module):
    """First module of every image model: ``uint8`` or ``[0, 1]`` images to standard scores.

    ``uint8`` input is divided by 255; then each channel ``c`` becomes
    ``(x_c - mean_c) / std_c``. With ``channels_last`` the output is in that memory format, so
    a channels-last model gets channels-last activations without help from the caller.
    """

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD, channels_last: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.to(self.mean.dtype) / 255
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def augment_cifar(X: torch.Tensor, generator: torch.Generator | None = None,
                  padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Standard CIFAR augmentation of a batch: random crop with zero padding, random flip.

    Each image is zero-padded by ``padding`` pixels on every side, a window of the original
    size is cut at a uniformly random offset in ``[0, 2 padding]`` per axis, and with
    ``flip`` the window is mirrored left-right with probability 1/2. Vectorised: one gather
    for the whole batch, on the batch's device.

    Parameters
    ----------
    X : Tensor of shape (N, C, H, W)
        Images, any dtype (``uint8`` stays ``uint8``).
    generator : torch.Generator, optional
        Source of the offsets and flips (any device); the same state gives the same batch.

    Returns
    -------
    Tensor of the shape and dtype of ``X``.
    """
    n, channels, height, width = X.shape
    device = generator.device if generator is not None else X.device
    shift_y = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)
    shift_x = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)
    rows = (shift_y + torch.arange(height, device=device)).to(X.device)
    cols = shift_x + torch.arange(width, device=device)
    if flip:
        mirrored = torch.rand(n, 1, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    cols = cols.to(X.device)
    padded = F.pad(X, (padding, padding, padding, padding))
    batch = torch.arange(n, device=X.device).view(n, 1, 1, 1)
    channel = torch.arange(channels, device=X.device).view(1, channels, 1, 1)
    return padded[batch, channel, rows.view(n, 1, height, 1), cols.view(n, 1, 1, width)]


# ---------------------------------------------------------------------------------------------
# Subsetting


def _check_sizes(n_available: int, n_train: int | None, n_val: int, what: str) -> None:
    if n_val < 0 or (n_train is not None and n_train < 1):
        raise ValueError(f"{what}: need n_train >= 1 (or None) and n_val >= 0, "
                         f"got n_train={n_train}, n_val={n_val}")
    wanted = n_val + (n_train or 1)
    if wanted > n_available:
        raise ValueError(f"{what}: n_train + n_val = {wanted} exceeds the {n_available} "
                         "training images")


def subset_indices(n_train_available: int, n_test_available: int, n_train: int | None,
                   n_val: int, n_test: int | None, seed: int) -> dict[str, np.ndarray]:
    """Seeded, portable index sets ``{"train", "val", "test"}`` (each sorted).

    One permutation of the training indices gives ``val`` (its first ``n_val`` entries) and
    then ``train`` (the next ``n_train``, or all the rest); ``test`` is a seeded subset of
    ``n_test`` test indices, or all of them.
    """
    _check_sizes(n_train_available, n_train, n_val, "subset")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_train_available)
    val = order[:n_val]
    train = order[n_val:] if n_train is None else order[n_val:n_val + n_train]
    if n_test is None or n_test >= n_test_available:
        test = np.arange(n_test_available)
    else:
        test = rng.permutation(n_test_available)[:n_test]
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _image_split(parts: dict[str, tuple[np.ndarray, np.ndarray]], classes,
                source: str) -> ImageSplit:
    """An :class:`ImageSplit` from already selected ``{"train", "val", "test"}`` arrays."""
    tensors = {name: (torch.from_numpy(np.ascontiguousarray(X)),
                      torch.from_numpy(np.asarray(y, dtype=np.int64)))
               for name, (X, y) in parts.items() if len(y)}
    X_val, y_val = tensors.get("val", (None, None))
    return ImageSplit(*tensors["train"], *tensors["test"], X_val=X_val, y_val=y_val,
                      classes=tuple(classes), source=source)


def _select(arrays: dict[str, np.ndarray], index: dict[str, np.ndarray]):
    """Rows of ``X_train``/``X_test`` (and labels) for each part of ``index``."""
    origin = {"train": "train", "val": "train", "test": "test"}
    return {name: (arrays[f"X_{origin[name]}"][rows], arrays[f"y_{origin[name]}"][rows])
            for name, rows in index.items()}


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def default_archive() -> Path:
    """``$GROWCORE_CIFAR10_ARCHIVE``, default ``<repo>/../shared/data/cifar10-jpeg.tar.gz``."""
    default = repo_root().parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    return Path(os.environ.get(ARCHIVE_ENV, default))


def _save_npz(path: Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` atomically (a crash never leaves a partial cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def decode_jpeg_archive(archive: str | Path, classes=CIFAR10_CLASSES) -> dict[str, np.ndarray]:
    """Decode a ``<top>/{train,test}/<class>/<name>.jpg`` tar.gz archive into uint8 arrays.

    Images are ordered by (class, file name) within each part, so the arrays do not depend on
    the order of the archive's members.

    Returns
    -------
    dict with ``X_train`` ``[N, 3, H, W]`` uint8, ``y_train`` int64, ``X_test``, ``y_test``.
    """
    from PIL import Image

    label = {name: k for k, name in enumerate(classes)}
    found: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(".jpg"):
                continue
            part, class_name = parts[-3], parts[-2]
            if part not in found or class_name not in label:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            found[part].append((label[class_name], parts[-1], pixels))
    arrays = {}
    for part, items in found.items():
        if not items:
            raise ValueError(f"{archive}: no images under <top>/{part}/<class>/*.jpg")
        items.sort(key=lambda item: item[:2])
        arrays[f"X_{part}"] = np.stack([p for *_, p in items]).transpose(0, 3, 1, 2).copy()
        arrays[f"y_{part}"] = np.array([k for k, *_ in items], dtype=np.int64)
    return arrays


def _torchvision_cifar(dataset_class, root: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for part, train in (("train", True), ("test", False)):
        data = dataset_class(root=str(root), train=train, download=True)
        arrays[f"X_{part}"] = np.ascontiguousarray(data.data.transpose(0, 3, 1, 2))
        arrays[f"y_{part}"] = np.asarray(data.targets, dtype=np.int64)
    return arrays


def _missing_cifar10(cache: Path, archive: Path) -> DataNotFoundError:
    return DataNotFoundError(
        f"CIFAR-10 not found: no decoded cache at {cache} and no archive at {archive}. "
        "Provide the data in one of these ways: pass archive=<path to cifar10-jpeg.tar.gz> "
        f"(the notebooks' cifar10_archive parameter), set ${ARCHIVE_ENV} to that path, "
        "or pass download=True to fetch the original release with torchvision "
        "(needs internet).")


def load_cifar10_arrays(root: str | Path | None = None, archive: str | Path | None = None,
                        download: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """All 60,000 CIFAR-10 images as uint8 arrays, and a sentence saying where they came from.

    Looks for the cache, then the archive (decoding it and writing the cache, atomically),
    then downloads with torchvision if ``download``; otherwise raises
    :class:`DataNotFoundError` before any work.
    """
    root = Path(root) if root is not None else data_dir() / "cifar10"
    archive = Path(archive) if archive is not None else default_archive()
    cache = root / JPEG_CACHE
    jpeg_caveat = "JPEG-compressed copy of CIFAR-10 (pixels differ slightly from the original)"
    if cache.exists():
        with np.load(cache) as stored:
            return {key: stored[key] for key in stored.files}, f"{jpeg_caveat}, cache {cache}"
    if archive.exists():
        arrays = decode_jpeg_archive(archive)
        _save_npz(cache, **arrays)
        return arrays, f"{jpeg_caveat}, decoded from {archive}"
    if download:
        import torchvision

        arrays = _torchvision_cifar(torchvision.datasets.CIFAR10, root)
        return arrays, f"original CIFAR-10 binary release via torchvision in {root}"
    raise _missing_cifar10(cache, archive)


def cifar10(root: str | Path | None = None, archive: str | Path | None = None,
            n_train: int | None = None, n_val: int = 0, n_test: int | None = None,
            seed: int = 0, download: bool = False) -> ImageSplit:
    """CIFAR-10 (Krizhevsky 2009) as an :class:`ImageSplit` of uint8 images ``[N, 3, 32, 32]``.

    Parameters
    ----------
    root : path, optional
        Folder of the decoded cache (and of torchvision's download); default
        ``<data_dir>/cifar10`` with ``data_dir()`` from ``$GROWCORE_DATA``.
    archive : path, optional
        The offline JPEG archive; default ``$GROWCORE_CIFAR10_ARCHIVE`` or
        ``<repo>/../shared/data/cifar10-jpeg.tar.gz``.
    n_train, n_val, n_test : int, optional
        Sizes of the seeded subsets (``None``: all remaining training / all 10,000 test images);
        the validation images are held out of the 50,000 training images.
    seed : int
        Seed of the subsets (NumPy PCG64: the same on every machine).
    download : bool
        Allow torchvision to download the original release when nothing is found locally.
    """
    _check_sizes(_CIFAR10_SIZES[0], n_train, n_val, "cifar10")
    arrays, source = load_cifar10_arrays(root, archive, download)
    index = subset_indices(len(arrays["y_train"]), len(arrays["y_test"]), n_train, n_val,
                           n_test, seed)
    return _image_split(_select(arrays, index), CIFAR10_CLASSES, source)


# ---------------------------------------------------------------------------------------------
# CIFAR-100 and ImageFolder


def _read_cifar100_part(folder: Path, part: str, label_key: str):
    with open(folder / part, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    X = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return X, np.asarray(entry[label_key], dtype=np.int64)


def cifar100(root: str | Path | None = None, n_train: int | None = None, n_val: int = 0,
             n_test: int | None = None, seed: int = 0, labels: str = "fine",
             download: bool = False) -> ImageSplit:
    """CIFAR-100 from the python release (torchvision's format) under ``root``.

    Reads ``root/cifar-100-python/{train,test,meta}``: pickles whose ``data`` holds rows of
    3072 bytes (R, G, B planes of 32x32) and ``fine_labels``/``coarse_labels`` the labels.
    With ``download`` torchvision fetches the release first if it is absent.

    Parameters
    ----------
    root : path, optional
        Default ``<data_dir>/cifar100``.
    labels : {"fine", "coarse"}
        The 100 classes or the 20 superclasses.

    Other parameters are those of :func:`cifar10`.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    root = Path(root) if root is not None else data_dir() / "cifar100"
    folder = root / "cifar-100-python"
    if not (folder / "train").exists() and download:
        import torchvision

        torchvision.datasets.CIFAR100(root=str(root), train=True, download=True)
    if not all((folder / part).exists() for part in ("train", "test", "meta")):
        raise DataNotFoundError(
            f"CIFAR-100 not found in {folder} (train, test, meta). Pass root=<folder holding "
            "cifar-100-python/> or download=True (needs internet).")
    key = f"{labels}_labels"
    arrays = {}
    for part in ("train", "test"):
        arrays[f"X_{part}"], arrays[f"y_{part}"] = _read_cifar100_part(folder, part, key)
    with open(folder / "meta", "rb") as f:
        classes = pickle.load(f, encoding="latin1")[f"{labels}_label_names"]
    index = subset_indices(len(arrays["y_train"]), len(arrays["y_test"]), n_train, n_val,
                           n_test, seed)
    return _image_split(_select(arrays, index), classes, f"CIFAR-100 python release in {folder}")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _list_image_folder(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for k, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES) if (folder / name).is_dir() else []
        files += found
        labels += [k] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _decode_resized(paths, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then centre-crop."""
    from PIL import Image

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / min(image.size)
            w, h = (max(size, round(s * scale)) for s in image.size)
            image = image.resize((w, h), Image.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            image = image.crop((left, top, left + size, top + size))
            out[i] = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    return out


def imagenet(root: str | Path, size: int = 64, n_train: int | None = None, n_val: int = 0,
             n_test: int | None = None, seed: int = 0, train_folder: str = "train",
             test_folder: str = "val") -> ImageSplit:
    """An ImageFolder tree (ImageNet layout) resized to ``size`` x ``size``, held in memory.

    ``root/<train_folder>/<class>/*`` and ``root/<test_folder>/<class>/*`` (ImageNet's
    validation set serves as the test set, as in the papers); classes sorted by name as in
    ``torchvision.datasets.ImageFolder``. Each image's shorter side is resized to ``size``
    and the centre square cut. Only the seeded subsets are decoded. In-memory uint8 storage
    suits subsets and small resolutions (all of ImageNet at 64 px is 15.7 GB); full-resolution
    runs need a streaming loader.
    """
    root = Path(root)
    train_dir, test_dir = root / train_folder, root / test_folder
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DataNotFoundError(f"ImageFolder tree not found: need {train_dir} and {test_dir} "
                                "with one folder of images per class. Pass root=<folder>.")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    train_files, train_labels = _list_image_folder(train_dir, classes)
    test_files, test_labels = _list_image_folder(test_dir, classes)
    index = subset_indices(len(train_files), len(test_files), n_train, n_val, n_test, seed)

    listed = {"train": (train_files, train_labels), "val": (train_files, train_labels),
              "test": (test_files, test_labels)}
    parts = {name: (_decode_resized([listed[name][0][i] for i in rows], size),
                    listed[name][1][rows]) for name, rows in index.items()}
    return _image_split(parts, classes, f"ImageFolder tree {root} at {size}x{size}")


DATASETS = ("cifar10", "cifar100", "imagenet")


def load_dataset(name: str, root: str | Path | None = None, archive: str | Path | None = None,
                 image_size: int = 64, **sizes) -> ImageSplit:
    """An image data set by name: :func:`cifar10` (from ``archive`` or the cache in
    ``root``), :func:`cifar100` or :func:`imagenet` (both from the folder ``root``, ImageNet
    resized to ``image_size``); ``sizes`` are ``n_train``, ``n_val``, ``n_test``, ``seed``."""
    if name == "cifar10":
        return cifar10(root, archive, **sizes)
    if name not in DATASETS:
        raise ValueError(f"image data set must be one of {DATASETS}, got {name!r}")
    if root is None:
        raise ValueError(f"{name} is read from a folder: give its root")
    if name == "cifar100":
        return cifar100(root, **sizes)
    return imagenet(root, size=image_size, **sizes)
