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

Data are checked, and errors name the file. The cache carries what it was made from (the
archive's size and SHA-256, the images per split and class, shapes and dtypes) and is verified
whenever it is loaded: a cache that is truncated, of another layout, or made from another
archive than the one at hand is rebuilt from that archive, or refused with the fix where there
is none. An archive that is truncated, holds an unreadable image, or lacks images of a class
(a partial copy) is refused and never cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from growcore.data import Split
from growcore.paths import data_dir, repo_root, write_atomically

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
_CIFAR100_SIZES = (50_000, 10_000)  # the python release
# Images per class of each part of CIFAR-10: an archive or cache with other counts is partial.
# None checks nothing (the tests' tiny archives).
CIFAR10_PER_CLASS: dict[str, int] | None = {"train": 5_000, "test": 1_000}
CIFAR10_IMAGE = (3, 32, 32)
CACHE_FORMAT = 1  # version of the cache's layout and of its "meta" entry
_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


class DataNotFoundError(FileNotFoundError):
    """A data set is neither cached, nor at the given location, nor allowed to download."""


class DataError(ValueError):
    """A data file that is truncated, unreadable, or not what it should hold; the message
    names the file."""


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


def _check_sizes(n_available: int, n_train: int | None, n_val: int, what: str,
                 n_test: int | None = None, n_test_available: int | None = None) -> None:
    if n_val < 0 or (n_train is not None and n_train < 1) or (n_test is not None and n_test < 1):
        raise ValueError(f"{what}: need n_train >= 1 (or None), n_val >= 0 and n_test >= 1 "
                         f"(or None), got n_train={n_train}, n_val={n_val}, n_test={n_test}")
    wanted = n_val + (n_train or 1)
    if wanted > n_available:
        raise ValueError(f"{what}: n_train + n_val = {wanted} exceeds the {n_available} "
                         "training images")
    if n_test is not None and n_test_available is not None and n_test > n_test_available:
        raise ValueError(f"{what}: n_test = {n_test} exceeds the {n_test_available} test "
                         "images (None: all of them)")


def subset_indices(n_train_available: int, n_test_available: int, n_train: int | None,
                   n_val: int, n_test: int | None, seed: int) -> dict[str, np.ndarray]:
    """Seeded, portable index sets ``{"train", "val", "test"}`` (each sorted).

    One permutation of the training indices gives ``val`` (its first ``n_val`` entries) and
    then ``train`` (the next ``n_train``, or all the rest); ``test`` is a seeded subset of
    ``n_test`` test indices, or all of them.
    """
    _check_sizes(n_train_available, n_train, n_val, "subset", n_test, n_test_available)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_train_available)
    val = order[:n_val]
    train = order[n_val:] if n_train is None else order[n_val:n_val + n_train]
    if n_test is None or n_test == n_test_available:
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
    write_atomically(path, lambda f: np.savez(f, **arrays), suffix=".npz")


def archive_identity(archive: str | Path) -> dict:
    """What a cache records of the archive it was decoded from: name, size, SHA-256."""
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": Path(archive).name, "size": Path(archive).stat().st_size,
            "sha256": digest.hexdigest()}


def _same_archive(a: dict, b: dict) -> bool:
    return a.get("size") == b.get("size") and a.get("sha256") == b.get("sha256")


def _describe_arrays(arrays: dict[str, np.ndarray], classes) -> dict:
    """Counts per split and class, shapes and dtypes of decoded CIFAR-10 arrays."""
    return {"counts": {part: np.bincount(arrays[f"y_{part}"], minlength=len(classes)).tolist()
                       for part in ("train", "test")},
            "shapes": {key: list(arrays[key].shape) for key in _ARRAYS},
            "dtypes": {key: str(arrays[key].dtype) for key in _ARRAYS},
            "classes": list(classes)}


def verify_cifar10(arrays: dict[str, np.ndarray], where, classes=CIFAR10_CLASSES,
                   meta: dict | None = None) -> None:
    """Raise DataError naming ``where`` unless ``arrays`` are CIFAR-10 as this module makes
    them: uint8 images ``[N, 3, 32, 32]``, int64 labels of the classes, every class with
    :data:`CIFAR10_PER_CLASS` images per part, and (for a cache) what its ``meta`` says."""
    for part in ("train", "test"):
        X, y = arrays[f"X_{part}"], arrays[f"y_{part}"]
        if X.dtype != np.uint8 or X.ndim != 4 or tuple(X.shape[1:]) != CIFAR10_IMAGE:
            raise DataError(f"{where}: X_{part} is {X.dtype} {list(X.shape)}, not uint8 images "
                            f"[N, {', '.join(map(str, CIFAR10_IMAGE))}]")
        if y.dtype != np.int64 or y.shape != (len(X),):
            raise DataError(f"{where}: y_{part} is {y.dtype} {list(y.shape)}, not {len(X)} "
                            "int64 labels")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{where}: y_{part} holds labels outside 0..{len(classes) - 1}")
        counts = np.bincount(y, minlength=len(classes)).tolist()
        expected = CIFAR10_PER_CLASS and CIFAR10_PER_CLASS[part]
        if expected and counts != [expected] * len(classes):
            short = {classes[k]: n for k, n in enumerate(counts) if n != expected}
            raise DataError(f"{where}: a partial copy of CIFAR-10: {part} images per class "
                            f"{short}, but CIFAR-10 has {expected} of each class")
        if not len(y):
            raise DataError(f"{where}: no {part} images")
    if meta is not None:
        found = _describe_arrays(arrays, classes)
        wrong = [key for key in found if meta.get(key) != found[key]]
        if wrong:
            raise DataError(f"{where}: its {', '.join(wrong)} differ from what its meta "
                            "entry says it was made with")


def _cache_meta(arrays: dict[str, np.ndarray], archive_id: dict, classes) -> np.ndarray:
    meta = {"format": CACHE_FORMAT, "archive": archive_id, **_describe_arrays(arrays, classes)}
    return np.array(json.dumps(meta))


def _read_meta(stored, cache: Path) -> dict:
    if "meta" not in stored.files:
        raise DataError(f"{cache}: has no meta entry (written by an older growcore or "
                        "another program): its source cannot be checked")
    meta = json.loads(str(stored["meta"]))
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{cache}: cache format {meta.get('format')!r}, not {CACHE_FORMAT}")
    origin = meta.get("archive")
    if not isinstance(origin, dict) or not {"name", "size", "sha256"} <= set(origin):
        raise DataError(f"{cache}: its meta entry does not say which archive it was made from")
    return meta


def read_cache(cache: str | Path, arrays: bool = True) -> tuple[dict, dict]:
    """The arrays (unless ``arrays`` is False) and the ``meta`` of a decoded CIFAR-10 cache,
    verified (:func:`verify_cifar10`); DataError naming the file for any fault (truncated,
    unreadable, missing entries, contents that differ from its meta)."""
    cache = Path(cache)
    try:
        with open(cache, "rb") as file, np.load(file, allow_pickle=False) as stored:
            meta = _read_meta(stored, cache)
            missing = [key for key in _ARRAYS if key not in stored.files]
            if missing:
                raise DataError(f"{cache}: no {', '.join(missing)}")
            loaded = {key: stored[key] for key in _ARRAYS} if arrays else {}
    except DataError:
        raise
    except Exception as error:  # a truncated or foreign file fails in many ways
        raise DataError(f"{cache}: unreadable or truncated ({type(error).__name__}: "
                        f"{error})") from error
    if arrays:
        verify_cifar10(loaded, cache, tuple(meta.get("classes", CIFAR10_CLASSES)), meta)
    return loaded, meta


def decode_jpeg_archive(archive: str | Path, classes=CIFAR10_CLASSES) -> dict[str, np.ndarray]:
    """Decode a ``<top>/{train,test}/<class>/<name>.jpg`` tar.gz archive into uint8 arrays.

    Images are ordered by (class, file name) within each part, so the arrays do not depend on
    the order of the archive's members. A truncated archive, an unreadable image, an image
    that is not 32x32, or a class with fewer images than CIFAR-10 has raise DataError naming
    the archive (and the member).

    Returns
    -------
    dict with ``X_train`` ``[N, 3, H, W]`` uint8, ``y_train`` int64, ``X_test``, ``y_test``.
    """
    from PIL import Image

    label = {name: k for k, name in enumerate(classes)}
    found: dict[str, list] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if (not member.isfile() or len(parts) < 3
                        or not parts[-1].lower().endswith(".jpg")):
                    continue
                part, class_name = parts[-3], parts[-2]
                if part not in found or class_name not in label:
                    continue
                data = tar.extractfile(member).read()
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
                except (OSError, ValueError) as error:  # UnidentifiedImageError, truncated
                    raise DataError(f"{archive}: member {member.name} is not a readable "
                                    f"image ({error})") from error
                if pixels.shape != (*CIFAR10_IMAGE[1:], CIFAR10_IMAGE[0]):
                    raise DataError(f"{archive}: member {member.name} is "
                                    f"{pixels.shape[1]}x{pixels.shape[0]}, not 32x32")
                found[part].append((label[class_name], parts[-1], pixels))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"{archive}: not a complete tar.gz archive ({type(error).__name__}: "
                        f"{error}); fetch it again") from error
    arrays = {}
    for part, items in found.items():
        if not items:
            raise DataError(f"{archive}: no images under <top>/{part}/<class>/*.jpg")
        items.sort(key=lambda item: item[:2])
        arrays[f"X_{part}"] = np.stack([p for *_, p in items]).transpose(0, 3, 1, 2).copy()
        arrays[f"y_{part}"] = np.array([k for k, *_ in items], dtype=np.int64)
    verify_cifar10(arrays, archive, classes)
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


def _cifar10_paths(root, archive) -> tuple[Path, Path]:
    root = Path(root) if root is not None else data_dir() / "cifar10"
    return root / JPEG_CACHE, Path(archive) if archive is not None else default_archive()


JPEG_CAVEAT = "JPEG-compressed copy of CIFAR-10 (pixels differ slightly from the original)"


def load_cifar10_arrays(root: str | Path | None = None, archive: str | Path | None = None,
                        download: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """All 60,000 CIFAR-10 images as uint8 arrays, and a sentence saying where they came from.

    Looks for the cache, then the archive (decoding it and writing the cache, atomically),
    then downloads with torchvision if ``download``; otherwise raises
    :class:`DataNotFoundError` before any work. The cache is used only if it verifies
    (:func:`read_cache`) and, where the archive is at hand, was made from that archive;
    otherwise it is rebuilt from the archive, or, with no archive, refused (DataError naming
    the cache and the fix).
    """
    cache, archive = _cifar10_paths(root, archive)
    identity = archive_identity(archive) if archive.is_file() else None
    if cache.exists():
        try:
            arrays, meta = read_cache(cache)
            if identity is None or _same_archive(meta["archive"], identity):
                origin = meta["archive"]
                checked = "" if identity else f"; archive {archive} absent, not compared"
                return arrays, (f"{JPEG_CAVEAT}, cache {cache} of {origin['name']} (sha256 "
                                f"{origin['sha256'][:12]}){checked}")
            reason = (f"{cache} was made from another archive (sha256 "
                      f"{meta['archive']['sha256'][:12]}) than {archive} (sha256 "
                      f"{identity['sha256'][:12]})")
        except DataError as error:
            if identity is None:
                raise DataError(f"{error}. Fix: delete {cache} and give the archive "
                                f"(archive=..., the cifar10_archive parameter or "
                                f"${ARCHIVE_ENV}) to rebuild it") from error
            reason = str(error)
        warnings.warn(f"rebuilding the CIFAR-10 cache from {archive}: {reason}", stacklevel=2)
    if identity is not None:
        arrays = decode_jpeg_archive(archive)
        _save_npz(cache, meta=_cache_meta(arrays, identity, CIFAR10_CLASSES), **arrays)
        return arrays, (f"{JPEG_CAVEAT}, decoded from {archive} (sha256 "
                        f"{identity['sha256'][:12]})")
    if download:
        import torchvision

        arrays = _torchvision_cifar(torchvision.datasets.CIFAR10, cache.parent)
        return arrays, f"original CIFAR-10 binary release via torchvision in {cache.parent}"
    raise _missing_cifar10(cache, archive)


def cifar10_sizes(root: str | Path | None = None,
                  archive: str | Path | None = None) -> tuple[int, int]:
    """(training images, test images) that :func:`load_cifar10_arrays` would give, known
    without decoding: from the cache's meta when the cache holds the archive at hand, else
    CIFAR-10's own (the archive is checked against them when decoded). DataNotFoundError if
    neither the cache nor the archive is there, or if ``archive`` is given and is no file."""
    explicit = archive is not None
    cache, archive = _cifar10_paths(root, archive)
    if explicit and not archive.is_file():
        raise DataNotFoundError(f"no CIFAR-10 archive at {archive} (not a file)")
    if cache.exists():
        try:
            _, meta = read_cache(cache, arrays=False)
            if not archive.is_file() or _same_archive(meta["archive"], archive_identity(archive)):
                return tuple(sum(meta["counts"][part]) for part in ("train", "test"))
        except DataError as error:
            if not archive.is_file():
                raise DataError(f"{error}. Fix: delete {cache} and give the archive "
                                f"(the cifar10_archive parameter or ${ARCHIVE_ENV}) to "
                                "rebuild it") from error
        return _CIFAR10_SIZES  # rebuilt from the archive when loaded
    if archive.is_file():
        return _CIFAR10_SIZES
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
    _check_sizes(_CIFAR10_SIZES[0], n_train, n_val, "cifar10", n_test, _CIFAR10_SIZES[1])
    arrays, source = load_cifar10_arrays(root, archive, download)
    index = subset_indices(len(arrays["y_train"]), len(arrays["y_test"]), n_train, n_val,
                           n_test, seed)
    return _image_split(_select(arrays, index), CIFAR10_CLASSES, source)


# ---------------------------------------------------------------------------------------------
# CIFAR-100 and ImageFolder


CIFAR100_PARTS = ("train", "test", "meta")


def _read_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """A pickle of the CIFAR-100 python release holding ``keys``; DataError naming the file."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError,
            ImportError, IndexError) as error:
        raise DataError(f"{path}: unreadable or truncated ({type(error).__name__}: {error}); "
                        "fetch the CIFAR-100 python release again") from error
    missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} (not the CIFAR-100 python release)")
    return entry


def _read_cifar100_part(folder: Path, part: str, label_key: str):
    path = folder / part
    entry = _read_pickle(path, ("data", label_key))
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.size % 3072 or data.size // 3072 != len(labels) or not len(labels):
        raise DataError(f"{path}: {data.size} bytes of images for {len(labels)} labels; each "
                        "image is 3072 bytes (3 x 32 x 32)")
    return data.reshape(-1, 3, 32, 32), labels


def _check_cifar100_folder(folder: Path) -> None:
    empty = [part for part in CIFAR100_PARTS
             if not (folder / part).is_file() or not (folder / part).stat().st_size]
    if empty:
        raise DataNotFoundError(
            f"CIFAR-100 not found in {folder}: no (or empty) {', '.join(empty)} of train, test, "
            "meta. Pass root=<folder holding cifar-100-python/> or download=True (needs "
            "internet).")


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
    _check_cifar100_folder(folder)
    key = f"{labels}_labels"
    arrays = {}
    for part in ("train", "test"):
        arrays[f"X_{part}"], arrays[f"y_{part}"] = _read_cifar100_part(folder, part, key)
    classes = _read_pickle(folder / "meta", (f"{labels}_label_names",))[f"{labels}_label_names"]
    for part in ("train", "test"):
        if arrays[f"y_{part}"].max() >= len(classes) or arrays[f"y_{part}"].min() < 0:
            raise DataError(f"{folder / part}: labels outside 0..{len(classes) - 1}")
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
        try:
            out[i] = _resized(Image, path, size)
        except (OSError, ValueError) as error:  # UnidentifiedImageError, truncated files
            raise DataError(f"{path}: not a readable image ({error})") from error
    return out


def _resized(Image, path: Path, size: int) -> np.ndarray:
    """One image, its shorter side resized to ``size``, the centre square, ``[3, size, size]``."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        w, h = (max(size, round(s * scale)) for s in image.size)
        image = image.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def image_folder_files(root: str | Path, train_folder: str = "train",
                       test_folder: str = "val") -> tuple[list[str], tuple, tuple]:
    """The classes (folder names of the training part, sorted) and the image files with
    their labels of the training and the test part of an ImageFolder tree. A missing part,
    or a part with no image of a known suffix, raises DataNotFoundError naming the folder."""
    root = Path(root)
    train_dir, test_dir = root / train_folder, root / test_folder
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DataNotFoundError(f"ImageFolder tree not found: need {train_dir} and {test_dir} "
                                "with one folder of images per class. Pass root=<folder>.")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    parts = []
    for folder in (train_dir, test_dir):
        files, labels = _list_image_folder(folder, classes)
        if not files:
            raise DataNotFoundError(
                f"no images in {folder}: need {folder}/<class>/<image> for the classes of "
                f"{train_dir} ({len(classes)} class folders found there), with suffixes "
                f"{', '.join(IMAGE_SUFFIXES)}")
        parts.append((files, labels))
    return classes, parts[0], parts[1]


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
    classes, (train_files, train_labels), (test_files, test_labels) = image_folder_files(
        root, train_folder, test_folder)
    index = subset_indices(len(train_files), len(test_files), n_train, n_val, n_test, seed)

    listed = {"train": (train_files, train_labels), "val": (train_files, train_labels),
              "test": (test_files, test_labels)}
    parts = {name: (_decode_resized([listed[name][0][i] for i in rows], size),
                    listed[name][1][rows]) for name, rows in index.items()}
    return _image_split(parts, classes, f"ImageFolder tree {root} at {size}x{size}")


DATASETS = ("cifar10", "cifar100", "imagenet")


def dataset_sizes(name: str, root: str | Path | None = None,
                  archive: str | Path | None = None) -> tuple[int, int]:
    """(training images, test images) of the data set :func:`load_dataset` would load, known
    without decoding any image (for checks before compute). DataNotFoundError or DataError,
    naming the folder or file, where the data set is absent or its files are empty."""
    if name == "cifar10":
        return cifar10_sizes(root, archive)
    if name not in DATASETS:
        raise ValueError(f"image data set must be one of {DATASETS}, got {name!r}")
    if root is None:
        raise ValueError(f"{name} is read from a folder: give its root")
    if name == "cifar100":
        _check_cifar100_folder(Path(root) / "cifar-100-python")
        return _CIFAR100_SIZES
    _, (train_files, _), (test_files, _) = image_folder_files(root)
    return len(train_files), len(test_files)


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
