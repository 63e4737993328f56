"""Streaming image data: an ImageFolder tree (ImageNet at 224 px) read from disk batch by batch.

:func:`growcore.images.imagenet` decodes a tree once into ``uint8`` memory, which suits CIFAR
and small subsets; all of ImageNet at 224 px is 193 GB that way. :class:`ImageFolderStream`
reads the same tree (``root/train/<class>/*``, ``root/val/<class>/*``, classes sorted by name,
the suffixes of :data:`growcore.images.IMAGE_SUFFIXES`) through torchvision's
``DatasetFolder`` and transforms and a torch ``DataLoader`` with worker processes, pinned memory
and non-blocking copies when the batches go to a GPU.

It keeps the in-memory contract: batches are ``uint8`` images ``[N, 3, size, size]`` and
``int64`` labels, and the model standardises them in its first module,
``Standardize(IMAGENET_MEAN, IMAGENET_STD)`` (:class:`growcore.images.Standardize`). The same
models therefore run on either source, and a batch crosses to the GPU at a quarter of the bytes
of ``float32``.

The augmentation is the papers' standard one (the ResNet/Inception recipe): for training a
``RandomResizedCrop(size)`` (area 8 % to 100 %, aspect 3/4 to 4/3) and a horizontal flip with
probability 1/2; for evaluation the shorter side resized to ``round(size * 256 / 224)`` and the
centre ``size`` x ``size`` cut.

Reproducibility does not depend on the machine, the number of workers or an interruption:

* the order of epoch ``e`` is a NumPy PCG64 permutation seeded by ``(seed, e)`` only;
* the random crop and flip of example ``i`` in epoch ``e`` are drawn from torch's generator
  seeded by ``(seed, e, i)`` only (:func:`example_seed`), in whichever process decodes it;
* :meth:`ImageFolderStream.state_dict` holds the epoch and the number of examples already
  delivered in it, so a stream that loads it continues with exactly the batches an
  uninterrupted one would have given.

Under torchrun, rank ``r`` of ``w`` takes entries ``r, r + w, ...`` of the epoch's permutation
(the same on every rank) among its first ``w * floor(N / w)``: the ranks' parts are disjoint and
equal, so every rank has the same number of batches. The remainder of at most ``w - 1``
examples is dropped, not padded (no example is seen twice in an epoch; another permutation
drops others in the next one), as :func:`growcore.distributed.shard` does for in-memory splits.
Step ``k``'s batches of the ``w`` ranks together are then the entries
``k b w .. (k + 1) b w - 1`` of the permutation: the batch of one process with ``b w`` images.
The test images (ImageNet's val folder, the test set as in :func:`growcore.images.imagenet`)
are not sharded: every rank evaluates all of them, as in :mod:`growcore.distributed`.

Growth steps and validation read in-memory data (:class:`growcore.stats.Probe`, the
when-policies' validation error): :meth:`ImageFolderStream.sample` decodes a seeded sample of
the training images and the validation hold-out (``n_val`` training images chosen by
``split_seed``, never in the training order) with the evaluation transform, as an
:class:`growcore.images.ImageSplit`. :class:`Streamed` pairs a stream with its sample: the
data source that :func:`growcore.train.train` accepts besides a :class:`growcore.data.Split`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import default_loader
from torchvision.transforms import v2

from growcore.images import IMAGE_SUFFIXES, DataNotFoundError, ImageSplit
from growcore.params import ParameterError, Spec, check, require

RESIZE_RATIO = 256 / 224  # evaluation: shorter side to size * 256/224, then the centre crop
DEFAULT_WORKERS = 4  # decoding processes; 224 px JPEGs need several per GPU (results unchanged)
# first word of the seeds: the order, the crops, the hold-out and the sample never collide
_ORDER_STREAM, _AUGMENT_STREAM, _HOLDOUT_STREAM, _SAMPLE_STREAM = 0, 1, 2, 3
DEFAULT_SAMPLE = 1024  # training images of the in-memory sample that growth steps read
_SHOWN_FOLDERS = 5  # empty class folders named in an error
_STATE_KEYS = ("epoch", "position", "seed", "world", "n_examples", "split_seed")

Batch = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Order and seeds


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` examples in ``epoch``: NumPy PCG64 seeded by ``(seed, epoch)``.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    return np.random.default_rng((_ORDER_STREAM, seed, epoch)).permutation(n)


def shard_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Rank ``rank``'s examples of ``epoch``: entries ``rank, rank + world, ...`` of
    :func:`epoch_order` among its first ``world * floor(n / world)`` (equal, disjoint parts).

    Returns
    -------
    ndarray of shape (n // world,), int64
    """
    return epoch_order(n, seed, epoch)[rank:n // world * world:world]


def held_out(n: int, n_val: int, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The validation hold-out of ``n`` training images and the rest, both sorted: the first
    ``n_val`` entries of a NumPy PCG64 permutation seeded by ``split_seed`` (not by the
    training seed, so that every seed of a study validates on the same images).

    Returns
    -------
    validation : ndarray of shape (n_val,), int64
    kept : ndarray of shape (n - n_val,), int64
    """
    order = np.random.default_rng((_HOLDOUT_STREAM, split_seed)).permutation(n)
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def example_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random augmentation of example ``index`` in ``epoch`` (a 64-bit integer).

    A function of the three numbers only (NumPy's ``SeedSequence``), so the crop and flip of an
    example do not depend on its batch, its rank or the worker process that decodes it.
    """
    words = np.random.SeedSequence((_AUGMENT_STREAM, seed, epoch, index))
    return int(words.generate_state(1, np.uint64)[0])


# ---------------------------------------------------------------------------------------------
# Transforms


def train_transform(size: int) -> v2.Compose:
    """``RandomResizedCrop(size)`` and ``RandomHorizontalFlip``, to ``uint8 [3, size, size]``."""
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                       v2.PILToTensor()])


def evaluation_transform(size: int) -> v2.Compose:
    """Shorter side to ``round(size * 256 / 224)``, centre crop ``size``; ``uint8`` tensor."""
    return v2.Compose([v2.Resize(round(size * RESIZE_RATIO), antialias=True),
                       v2.CenterCrop(size), v2.PILToTensor()])


# ---------------------------------------------------------------------------------------------
# Folders


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted (the rule of :func:`growcore.images.imagenet`)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_names(folder: Path) -> list[str]:
    """Sorted names of the class folders in ``folder``; an error if there are none."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise DataNotFoundError(f"no class folders in {folder}: expected "
                                f"{folder}/<class>/<image> with one folder per class")
    return names


def _empty_folders_error(empty: list[Path]) -> DataNotFoundError:
    shown = ", ".join(str(p) for p in empty[:_SHOWN_FOLDERS])
    more = f" and {len(empty) - _SHOWN_FOLDERS} more" if len(empty) > _SHOWN_FOLDERS else ""
    return DataNotFoundError(f"no images in {len(empty)} class folder(s): {shown}{more}. "
                             f"Image files must end in one of {', '.join(IMAGE_SUFFIXES)} "
                             "(case ignored)")


def _tree(root: str | Path, train_folder: str, test_folder: str) -> tuple[Path, Path]:
    """``root/train_folder`` and ``root/test_folder``, or an error naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"ImageFolder root {root} does not exist (or is not a folder); "
                                f"expected {root}/{train_folder}/<class>/<image> and "
                                f"{root}/{test_folder}/<class>/<image>")
    for folder in (root / train_folder, root / test_folder):
        if not folder.is_dir():
            raise DataNotFoundError(f"{folder} not found: an ImageFolder tree needs "
                                    f"{root}/{train_folder} and {root}/{test_folder}, each "
                                    "with one folder of images per class")
    return root / train_folder, root / test_folder


def _check_test_classes(test_dir: Path, classes: list[str]) -> None:
    unknown = sorted(set(_class_names(test_dir)) - set(classes))
    if unknown:
        raise ValueError(f"class folders of {test_dir} absent from the training folder (their "
                         f"labels would be undefined): {', '.join(unknown)}")


class ClassFolders(DatasetFolder):
    """torchvision's ``DatasetFolder`` with the listing rule of :mod:`growcore.images`.

    The classes are given (the training folder's, so that a test folder lacking a class keeps
    the training labels); images are the files directly in ``folder/<class>/`` whose suffix is
    in ``IMAGE_SUFFIXES``, sorted by name; a class folder that exists but holds no image is an
    error naming it. Items are ``(image, label)`` with ``transform`` applied to the RGB image.
    """

    def __init__(self, folder: str | Path, classes: list[str], transform=None):
        self.given_classes = list(classes)
        super().__init__(str(folder), loader=default_loader, extensions=IMAGE_SUFFIXES,
                         transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self.given_classes, {name: k for k, name in enumerate(self.given_classes)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None,
                     is_valid_file=None, allow_empty: bool = False) -> list[tuple[str, int]]:
        present = [(Path(directory) / name, k) for name, k in class_to_idx.items()
                   if (Path(directory) / name).is_dir()]
        listed = [(folder, k, _images_in(folder)) for folder, k in present]
        empty = [folder for folder, _, files in listed if not files]
        if empty:
            raise _empty_folders_error(empty)
        return [(str(path), k) for _, k, files in listed for path in files]


class _SeededExamples(Dataset):
    """Items keyed by ``(index, epoch)``: the augmentation drawn under :func:`example_seed`.

    ``fork_rng`` restores torch's global generator afterwards, so decoding in the training
    process (``num_workers=0``) leaves the model's random numbers untouched.
    """

    def __init__(self, folder: ClassFolders, seed: int):
        self.folder, self.seed = folder, seed

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(example_seed(self.seed, epoch, index))
            return self.folder[index]


class _EpochBatches(Sampler):
    """Batch sampler of the DataLoader: ``indices`` of ``epoch`` in chunks, as ``(i, epoch)``.

    The stream sets ``epoch`` and ``indices`` (the rest of the epoch) before each pass; a pass
    reads them once at its start.
    """

    def __init__(self, batch_size: int):
        self.batch_size, self.epoch = batch_size, 0
        self.indices = np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, indices, size = self.epoch, self.indices, self.batch_size
        for start in range(0, len(indices), size):
            yield [(int(i), epoch) for i in indices[start:start + size]]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


# ---------------------------------------------------------------------------------------------
# The stream


def _check_parameters(size, batch_size, num_workers, seed, device, n_val, split_seed) -> None:
    check("size", size, Spec(int, minimum=1))
    check("batch_size", batch_size, Spec(int, minimum=1))
    check("num_workers", num_workers, Spec(int, minimum=0))
    check("seed", seed, Spec(int, minimum=0))
    check("n_val", n_val, Spec(int, minimum=0))
    check("split_seed", split_seed, Spec(int, minimum=0))
    require(torch.device(device).type != "cuda" or torch.cuda.is_available(), "device",
            f"{device!r} needs CUDA, which is not available here")


def _rank_and_world(rank: int | None, world: int | None) -> tuple[int, int]:
    """The given rank and world size, or the process group's, or ``(0, 1)`` outside torchrun."""
    joined = dist.is_available() and dist.is_initialized()
    if world is None:
        world = dist.get_world_size() if joined else 1
    if rank is None:
        rank = dist.get_rank() if joined else 0
    check("world", world, Spec(int, minimum=1))
    check("rank", rank, Spec(int, minimum=0, maximum=world - 1))
    return rank, world


class ImageFolderStream:
    """Seeded, resumable, sharded training batches and test batches streamed from a folder tree.

    Parameters
    ----------
    root : path
        The tree: ``root/<train_folder>/<class>/<image>`` and ``root/<test_folder>/<class>/...``.
    size : int
        Side of the square images of every batch (224 in the papers).
    batch_size : int
        Training images per batch on this rank (one update sees ``batch_size * world``).
    seed : int
        Seed of the epochs' order and of every example's augmentation (``>= 0``).
    num_workers : int
        Decoding processes of the DataLoader (0: decode in this process). The batches do not
        depend on it.
    device : str or torch.device
        Where the batches go. For a CUDA device the DataLoader pins its batches and the copies
        are non-blocking.
    rank, world : int, optional
        This process's rank and the number of ranks; default the process group's (torchrun),
        else ``0`` and ``1``.
    train_folder, test_folder : str
        Sub-folders of ``root``; the test folder (ImageNet's ``val``) is the test set, as in
        :func:`growcore.images.imagenet`. Its class folders must be training classes.
    test_batch_size : int, optional
        Images per test batch; default ``batch_size``.
    n_val : int
        Training images held out for validation (:func:`held_out`): never streamed for
        training, decoded by :meth:`sample` as its ``X_val``.
    split_seed : int
        Seed of the hold-out and of :meth:`sample`'s choice (``>= 0``).

    Raises
    ------
    ParameterError
        A bad ``size``, ``batch_size``, ``num_workers``, ``seed``, ``rank``, ``world``,
        ``device``, ``n_val`` or ``split_seed``, more ranks than training images, or a
        hold-out of all of them.
    DataNotFoundError
        A missing root or sub-folder, a folder without class folders, or a class folder without
        images (named, with the valid suffixes).
    ValueError
        A class folder of the test folder that the training folder lacks (named).

    All checks happen before any image is read.

    Notes
    -----
    One pass at a time: a new :meth:`batches` or :meth:`minibatches` abandons the previous
    one. With ``num_workers > 0`` the training workers persist from epoch to epoch; those of
    :meth:`test_batches` start at each call and end with it.
    """

    def __init__(self, root: str | Path, size: int = 224, batch_size: int = 256, *,
                 seed: int = 0, num_workers: int = DEFAULT_WORKERS,
                 device: str | torch.device = "cpu", rank: int | None = None,
                 world: int | None = None, train_folder: str = "train",
                 test_folder: str = "val", test_batch_size: int | None = None,
                 n_val: int = 0, split_seed: int = 0):
        _check_parameters(size, batch_size, num_workers, seed, device, n_val, split_seed)
        if test_batch_size is not None:
            check("test_batch_size", test_batch_size, Spec(int, minimum=1))
        self.rank, self.world = _rank_and_world(rank, world)
        train_dir, test_dir = _tree(root, train_folder, test_folder)
        self.classes = tuple(_class_names(train_dir))
        _check_test_classes(test_dir, list(self.classes))
        self.train = ClassFolders(train_dir, list(self.classes), train_transform(size))
        self.test = ClassFolders(test_dir, list(self.classes), evaluation_transform(size))
        require(n_val < len(self.train), "n_val",
                f"{train_dir} has {len(self.train)} training images: holding out {n_val} "
                "leaves none to train on")
        self.validation, self._kept = held_out(len(self.train), n_val, split_seed)
        require(len(self._kept) >= self.world, "world",
                f"{self.world} ranks need at least as many training images, "
                f"{train_dir} has {len(self._kept)} (after a hold-out of {n_val})")
        self.root, self.size, self.seed, self.split_seed = Path(root), size, seed, split_seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.test_batch_size = test_batch_size or batch_size
        self.device = torch.device(device)
        self.epoch, self.position = 0, 0
        self._sampler = _EpochBatches(batch_size)
        self._loader = self._data_loader(_SeededExamples(self.train, seed),
                                         batch_sampler=self._sampler,
                                         persistent_workers=num_workers > 0)

    # --- sizes -----------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_examples(self) -> int:
        """Training images in the tree (all ranks), less the validation hold-out."""
        return len(self._kept)

    @property
    def examples_per_epoch(self) -> int:
        """Training images this rank sees per epoch: ``floor(n_examples / world)``."""
        return self.n_examples // self.world

    @property
    def batches_per_epoch(self) -> int:
        """Training batches per epoch, the same on every rank (the last may be smaller)."""
        return -(-self.examples_per_epoch // self.batch_size)

    @property
    def n_test(self) -> int:
        return len(self.test)

    def __len__(self) -> int:
        """This rank's training images per epoch (as ``len(split.y_train)`` of a shard)."""
        return self.examples_per_epoch

    def describe(self) -> str:
        """One line: sizes, classes, resolution, shard and where the images are."""
        shard = f", rank {self.rank} of {self.world}" if self.world > 1 else ""
        val = f"val {len(self.validation)}, " if len(self.validation) else ""
        return (f"train {self.n_examples}, {val}test {self.n_test} images, {self.n_classes} "
                f"classes, streamed at {self.size}x{self.size} from {self.root}{shard}")

    # --- training batches ------------------------------------------------------------------

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Indices into ``self.train`` of this rank's examples of ``epoch``, in batch order."""
        return self._kept[shard_order(self.n_examples, self.seed, epoch, self.rank, self.world)]

    def batches(self) -> Iterator[Batch]:
        """The rest of the current epoch: batches ``(X, y)``, ``X`` ``uint8 [B, 3, size, size]``
        and ``y`` ``int64 [B]`` on ``device``.

        The position advances as each batch is handed over (not as workers prefetch), and past
        the epoch's last batch the stream is at the next epoch's start.
        """
        self._sampler.epoch = self.epoch
        self._sampler.indices = self.epoch_indices(self.epoch)[self.position:]
        for X, y in self._loader:
            self._advance(len(y))
            yield self._to_device(X), self._to_device(y)

    def minibatches(self, batch_size: int | None, generator: torch.Generator | None = None
                    ) -> Iterator[Batch]:
        """:meth:`batches` with the signature of :meth:`growcore.data.Split.minibatches`.

        ``batch_size`` must be the stream's (its DataLoader is built for it); ``generator`` is
        not used: the order and the augmentation come from ``seed`` and the epoch, so that a
        resumed run gets the same batches.
        """
        require(batch_size == self.batch_size, "batch_size",
                f"this stream was built for batch_size={self.batch_size}, got {batch_size}")
        return self.batches()

    def _advance(self, n: int) -> None:
        self.position += n
        if self.position >= self.examples_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    # --- test batches ----------------------------------------------------------------------

    def test_batches(self) -> Iterator[Batch]:
        """All test images once, in file order (class, name), evaluation transform; the same
        batches on every rank and in every call."""
        yield from (tuple(map(self._to_device, batch)) for batch in
                    self._data_loader(self.test, batch_size=self.test_batch_size))

    # --- in-memory sample ------------------------------------------------------------------

    def sample(self, n_train: int = DEFAULT_SAMPLE) -> ImageSplit:
        """Training images and the validation hold-out in memory, evaluation transform.

        ``X_train``: this rank's part (entries ``rank, rank + world, ...``, equal parts as in
        :func:`growcore.distributed.shard`) of ``min(n_train, n_examples)`` training images
        chosen by ``split_seed`` (the same whatever the training seed), sorted; ``X_val``: the
        whole hold-out (None without one); no test set (it is streamed). On ``device``.
        """
        check("n_train", n_train, Spec(int, minimum=1))
        n = min(n_train, self.n_examples) // self.world * self.world
        require(n > 0, "n_train", f"{self.world} ranks need a sample of at least "
                f"{self.world} images, got {min(n_train, self.n_examples)}")
        chosen = np.random.default_rng((_SAMPLE_STREAM, self.split_seed)).permutation(
            self._kept)[:n]
        X, y = self._decoded(np.sort(chosen)[self.rank::self.world])
        X_val, y_val = self._decoded(self.validation) if len(self.validation) else (None, None)
        return ImageSplit(X, y, X_val=X_val, y_val=y_val, classes=self.classes,
                          source=f"a sample of {self.describe()}")

    def _decoded(self, indices: np.ndarray) -> Batch:
        """Training images ``indices`` under the evaluation transform, as one batch."""
        folder = ClassFolders(self.train.root, list(self.classes),
                              evaluation_transform(self.size))
        batches = list(self._data_loader(Subset(folder, indices.tolist()),
                                         batch_size=self.test_batch_size))
        return tuple(self._to_device(torch.cat(part)) for part in zip(*batches))

    # --- resuming --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """Where the stream is: ``epoch``, ``position`` (this rank's examples of the epoch
        already handed over) and what they refer to (``seed``, ``world``, ``n_examples``).

        The same on every rank, so rank 0's checkpoint serves all.
        """
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world": self.world, "n_examples": self.n_examples,
                "split_seed": self.split_seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`): the next batches are those the
        saved stream would have given next (the same ``batch_size`` gives the same batches)."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ParameterError(f"state_dict lacks {', '.join(missing)}")
        for key in ("seed", "world", "n_examples", "split_seed"):
            require(state[key] == getattr(self, key), key,
                    f"the state was saved with {key}={state[key]}, this stream has "
                    f"{getattr(self, key)}: its order would differ")
        check("epoch", state["epoch"], Spec(int, minimum=0))
        check("position", state["position"],
              Spec(int, minimum=0, maximum=self.examples_per_epoch - 1))
        self.epoch, self.position = state["epoch"], state["position"]

    # --- plumbing --------------------------------------------------------------------------

    @property
    def _pin(self) -> bool:
        return self.device.type == "cuda"

    def _data_loader(self, dataset: Dataset, **options) -> DataLoader:
        # its own generator: making an iterator draws a seed, which must not move the global one
        return DataLoader(dataset, num_workers=self.num_workers, pin_memory=self._pin,
                          generator=torch.Generator().manual_seed(self.seed), **options)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=self._pin)


@dataclass
class Streamed:
    """A data source of :func:`growcore.train.train`: training batches streamed from
    ``stream``, growth statistics and validation from the in-memory ``sample``.

    Attributes
    ----------
    stream : ImageFolderStream
        Training batches (its own order, augmentation and shard) and the test batches.
    sample : ImageSplit
        :meth:`ImageFolderStream.sample`: ``X_train`` for the growth steps' probes,
        ``X_val`` for the validation error of the evaluations.
    test_in_loop : bool
        Stream the test set at every evaluation of the loop (False: only the validation
        error and the training error are recorded there).
    """

    stream: ImageFolderStream
    sample: ImageSplit
    test_in_loop: bool = True

    @classmethod
    def of(cls, stream: ImageFolderStream, n_sample: int = DEFAULT_SAMPLE) -> Streamed:
        """``stream`` with its :meth:`~ImageFolderStream.sample` of ``n_sample`` images."""
        return cls(stream, stream.sample(n_sample))
