"""The streaming ImageFolder source on small trees the tests generate: batches, seeded and
resumable order, per-example augmentation, shards, the evaluation transform and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from growcore.images import DataNotFoundError
from growcore.params import ParameterError
from growcore.streaming import RESIZE_RATIO, ImageFolderStream
from growcore.train import _endless

SIZE = 16  # pixels: side of the streamed images
BATCH = 4  # images per training batch
CLASSES = ("ant", "bee", "cat")
N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 6, 2
N_TRAIN = N_TRAIN_PER_CLASS * len(CLASSES)
SUFFIXES = (".jpg", ".png", ".JPEG")  # cycled over the training images: case is ignored
EVAL_SHORT_SIDE = round(SIZE * RESIZE_RATIO)  # test images have it already: resize is exact
BLACK = (0, 0, 0)


def colour(label: int, index: int) -> tuple[int, int, int]:
    """A distinct colour for test image ``index`` of class ``label``."""
    return (60 * label + 30, 90 * index + 40, 200 - 50 * label)


def noise_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Random pixels: every crop and flip changes the image."""
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def framed_image(index: int, fill: tuple[int, int, int]) -> Image.Image:
    """Black outside the evaluation's centre window, ``fill`` inside; landscape for an even
    ``index``, portrait for an odd one, the shorter side ``EVAL_SHORT_SIDE`` so the resize is
    the identity and the centre crop is exactly the ``fill``."""
    long_side = EVAL_SHORT_SIDE + 6 + 4 * index
    width, height = (long_side, EVAL_SHORT_SIDE) if index % 2 == 0 else (EVAL_SHORT_SIDE,
                                                                         long_side)
    image = Image.new("RGB", (width, height), BLACK)
    left, top = round((width - SIZE) / 2), round((height - SIZE) / 2)
    image.paste(fill, (left, top, left + SIZE, top + SIZE))
    return image


def write_class(folder, images: list[Image.Image], suffixes=(".png",)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:03d}{suffixes[i % len(suffixes)]}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 6 noise training images of varied sizes (JPEG and PNG, a stray text file)
    and 3 x 2 framed test images (PNG)."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        sizes = [(24 + 7 * i + label, 20 + 5 * ((i + label) % 3)) for i in range(N_TRAIN_PER_CLASS)]
        write_class(root / "train" / name, [noise_image(rng, *wh) for wh in sizes], SUFFIXES)
        write_class(root / "val" / name, [framed_image(i, colour(label, i))
                                          for i in range(N_TEST_PER_CLASS)])
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")
    return root


def stream(root, **options) -> ImageFolderStream:
    return ImageFolderStream(root, **{"size": SIZE, "batch_size": BATCH, "num_workers": 0,
                                      **options})


def epochs(source: ImageFolderStream, n: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for _ in range(n) for batch in source.batches()]


def identical(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(Xa, Xb) and torch.equal(ya, yb)
                                    for (Xa, ya), (Xb, yb) in zip(a, b))


def joined(batches: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([X for X, _ in batches]), torch.cat([y for _, y in batches])


def test_batches_are_uint8_images_of_every_example_once(tree):
    source = stream(tree)
    assert (source.n_examples, len(source), source.n_test) == (N_TRAIN, N_TRAIN, 6)
    assert source.classes == CLASSES and source.n_classes == len(CLASSES)
    batches = epochs(source)
    assert len(batches) == source.batches_per_epoch == -(-N_TRAIN // BATCH)
    assert [len(y) for _, y in batches] == [BATCH] * (N_TRAIN // BATCH) + [N_TRAIN % BATCH]
    X, y = joined(batches)
    assert X.shape == (N_TRAIN, 3, SIZE, SIZE) and X.dtype == torch.uint8
    assert y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [N_TRAIN_PER_CLASS] * len(CLASSES)
    assert sorted(source.epoch_indices(0)) == list(range(N_TRAIN))
    assert source.state_dict()["epoch"] == 1 and source.state_dict()["position"] == 0


def test_workers_give_the_batches_of_the_main_process(tree):
    one_process, two_workers = stream(tree), stream(tree, num_workers=2)
    assert identical(epochs(one_process, 2), epochs(two_workers, 2))
    assert identical(list(one_process.test_batches()), list(two_workers.test_batches()))


def test_order_and_augmentation_are_functions_of_seed_and_epoch(tree):
    first, again, other_seed = stream(tree, seed=3), stream(tree, seed=3), stream(tree, seed=4)
    epoch_0, epoch_1 = epochs(first), epochs(first)
    assert identical(epoch_0, epochs(again))
    assert not identical(epoch_0, epochs(other_seed))
    assert not np.array_equal(first.epoch_indices(0), first.epoch_indices(1))
    # the same examples in dataset order: epoch 1 crops them differently
    X0, X1 = (torch.empty_like(joined(epoch_0)[0]) for _ in range(2))
    X0[first.epoch_indices(0)], X1[first.epoch_indices(1)] = joined(epoch_0)[0], joined(epoch_1)[0]
    assert not any(torch.equal(a, b) for a, b in zip(X0, X1))
    # each example's crop is its own: other batch boundaries, the same images
    assert torch.equal(joined(epochs(stream(tree, seed=3, batch_size=7)))[0], X0[
        first.epoch_indices(0)])


def test_streaming_leaves_the_global_generator_alone(tree):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epochs(stream(tree))
    assert torch.equal(torch.rand(3), expected)


def test_resume_mid_epoch_continues_with_the_uninterrupted_batches(tree):
    uninterrupted = epochs(stream(tree), 2)
    interrupted = stream(tree, num_workers=2)  # workers prefetch: the position must not count it
    running = interrupted.batches()
    seen = [next(running) for _ in range(2)]
    state = interrupted.state_dict()
    assert state["epoch"] == 0 and state["position"] == 2 * BATCH
    resumed = stream(tree)
    resumed.load_state_dict(dict(state))
    assert identical(seen + epochs(resumed, 2), uninterrupted)


def test_state_after_an_epoch_s_last_batch_is_the_next_epoch(tree):
    source = stream(tree)
    running = source.batches()
    for _ in range(source.batches_per_epoch):
        next(running)
    assert (source.state_dict()["epoch"], source.state_dict()["position"]) == (1, 0)


def test_train_loop_consumption_runs_epoch_after_epoch(tree):
    source, reference = stream(tree), stream(tree)
    endless = _endless(source, BATCH, torch.Generator().manual_seed(0))
    n = 2 * reference.batches_per_epoch + 1
    assert identical([next(endless) for _ in range(n)], epochs(reference, 3)[:n])


@pytest.mark.parametrize("world", [2, 4])
def test_shards_are_disjoint_equal_and_cover_the_epoch(tree, world):
    shards = [stream(tree, rank=rank, world=world) for rank in range(world)]
    parts = [set(shard.epoch_indices(0).tolist()) for shard in shards]
    assert all(len(part) == N_TRAIN // world for part in parts)
    assert len(set.union(*parts)) == N_TRAIN // world * world  # disjoint, remainder dropped
    assert len({shard.batches_per_epoch for shard in shards}) == 1


def test_ranks_together_give_the_single_process_batch(tree):
    world = 2
    ranks = [epochs(stream(tree, rank=rank, world=world)) for rank in range(world)]
    single = epochs(stream(tree, batch_size=BATCH * world))
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for k, (X, y) in enumerate(single):
        interleaved = [torch.stack([rank[k][i] for rank in ranks], 1).flatten(0, 1)
                       for i in range(2)]
        assert torch.equal(interleaved[0], X) and torch.equal(interleaved[1], y)


def test_evaluation_is_the_deterministic_centre_crop(tree):
    source = stream(tree, test_batch_size=5)
    first, second = list(source.test_batches()), list(source.test_batches())
    assert identical(first, second) and [len(y) for _, y in first] == [5, 1]
    X, y = joined(first)
    assert y.tolist() == [k for k in range(len(CLASSES)) for _ in range(N_TEST_PER_CLASS)]
    expected = torch.tensor([colour(k, i) for k in range(len(CLASSES))
                             for i in range(N_TEST_PER_CLASS)], dtype=torch.uint8)
    assert torch.equal(X, expected.view(-1, 3, 1, 1).expand(-1, 3, SIZE, SIZE))


# ---------------------------------------------------------------------------------------------
# Errors, all before any image is read


def small_tree(root, train=("a", "b"), test=("a",)) -> None:
    for part, names in (("train", train), ("val", test)):
        for name in names:
            write_class(root / part / name, [Image.new("RGB", (20, 20), BLACK)] * 2)


@pytest.mark.parametrize(("options", "name"), [
    ({"size": 0}, "size"), ({"size": 224.0}, "size"), ({"batch_size": 0}, "batch_size"),
    ({"num_workers": -1}, "num_workers"), ({"seed": -1}, "seed"),
    ({"rank": 2, "world": 2}, "rank"), ({"world": 0}, "world"), ({"world": 100}, "world"),
    ({"test_batch_size": 0}, "test_batch_size")])
def test_bad_parameters_are_refused_by_name(tmp_path, options, name):
    small_tree(tmp_path)
    with pytest.raises(ParameterError, match=f"'{name}'"):
        stream(tmp_path, **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_cuda_device_without_cuda_is_refused(tmp_path):
    small_tree(tmp_path)
    with pytest.raises(ParameterError, match="'device'"):
        stream(tmp_path, device="cuda")


def test_a_missing_root_or_part_is_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="absent"):
        stream(tmp_path / "absent")
    write_class(tmp_path / "train" / "a", [Image.new("RGB", (20, 20), BLACK)])
    with pytest.raises(DataNotFoundError, match="val not found"):
        stream(tmp_path)


def test_a_part_without_class_folders_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataNotFoundError, match=r"no class folders in .*train"):
        stream(tmp_path)


def test_a_class_folder_without_images_is_named_with_the_suffixes(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "photo.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataNotFoundError, match=r"empty.*\.jpg, \.jpeg, \.png"):
        stream(tmp_path)


def test_a_test_class_unknown_to_training_is_named(tmp_path):
    small_tree(tmp_path, test=("a", "zebra"))
    with pytest.raises(ValueError, match="zebra"):
        stream(tmp_path)


def test_batch_size_of_minibatches_must_be_the_stream_s(tree):
    with pytest.raises(ParameterError, match="'batch_size'"):
        stream(tree).minibatches(BATCH + 1)


@pytest.mark.parametrize(("change", "name"), [
    ({"seed": 1}, "seed"), ({"world": 2}, "world"), ({"n_examples": 1}, "n_examples"),
    ({"position": N_TRAIN}, "position"), ({"epoch": -1}, "epoch")])
def test_a_state_of_another_stream_is_refused_by_name(tree, change, name):
    source = stream(tree)
    with pytest.raises(ParameterError, match=f"'{name}'"):
        source.load_state_dict({**source.state_dict(), **change})
