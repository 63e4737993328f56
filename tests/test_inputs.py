"""Bad inputs, bad files and faults, as tables of cases: each is refused before any compute
with a message naming what is wrong, and nothing is written that misdescribes a run.

Classes of input covered: non-finite numbers and values out of range (every float parameter
of every chapter), unknown parameter names (papermill's injected cell), the preset applied
under explicit values, data sizes against the data set, data folders without images, models
the input size cannot carry, growth that adds nothing, corrupt or partial CIFAR-10 archives
and caches, CIFAR-100 files and ImageFolder trees, records (standard JSON, status, no
temporary file), and the runner's own errors.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from growcore import data, images, results
from growcore.images import CIFAR10_CLASSES, DataError, DataNotFoundError
from growcore.params import ParameterError, Spec, check
from growcore.runner import REPO_ROOT, RunnerError, main, notebook_parameters, run_notebooks
from growcore.runtime import notebook_values

CHAPTERS = ("sensli", "gradmax", "nagn", "fragrow")
NAN, INF = float("nan"), float("inf")
PAPERMILL_TIMEOUT = 60  # seconds per cell: a refused notebook stops in its setup cell


def chapter(name: str):
    return importlib.import_module(f"growcore.chapters.{name}")


def refused(name: str, changes: dict) -> str:
    """The ParameterError message of chapter ``name``'s smoke parameters with ``changes``."""
    values = {**notebook_parameters(name, "smoke"), **changes}
    with pytest.raises(ParameterError) as error:
        chapter(name).validate(values)
    return str(error.value)


# -- the specification itself ------------------------------------------------------------

@pytest.mark.parametrize(("spec", "value", "fragment"), [
    (Spec(float, minimum=0), NAN, "must be float >= 0 (NaN and infinity are refused); got nan"),
    (Spec(float, minimum=0), INF, "got inf"),
    (Spec(float), -INF, "got -inf"),
    (Spec(float, greater_than=0), 0.0, "must be float > 0; got 0.0"),
    (Spec(float, minimum=0, less_than=1), 1.0, "must be float >= 0 and < 1; got 1.0"),
    (Spec(int, minimum=1, maximum=3), 4, "must be int >= 1 and <= 3; got 4"),
    (Spec(int, minimum=1), 2.0, "must be int >= 1; got 2.0"),
    (Spec(int, minimum=1), True, "must be int >= 1; got True"),
    (Spec(list, item=float), [1.0, NAN], "(item [1] is not finite)"),
    (Spec(list, item=int, minimum=1), [3, 0], "got [3, 0] (item [1] = 0)"),
    (Spec(dict), {"a": {"lr": INF}}, "(item ['a']['lr'] is not finite)"),
    (Spec(str, choices=("a", "b")), "c", "must be str one of 'a', 'b'; got 'c'"),
])
def test_spec_refuses_with_the_value_and_what_is_valid(spec, value, fragment):
    with pytest.raises(ParameterError) as error:
        check("x", value, spec)
    assert str(error.value).startswith("parameter 'x'") and fragment in str(error.value)


# -- every float parameter of every chapter: NaN and infinity ------------------------------

def _float_cases():
    for name in CHAPTERS:
        for parameter, spec in chapter(name).PARAMETERS.items():
            if spec.kind is float:
                yield from ((name, parameter, bad) for bad in (NAN, INF, -INF))
            elif spec.kind is list and spec.item is float:
                yield name, parameter, [NAN]


@pytest.mark.parametrize(("name", "parameter", "value"), list(_float_cases()))
def test_non_finite_numbers_are_refused(name, parameter, value):
    message = refused(name, {parameter: value})
    assert f"parameter {parameter!r}" in message and "NaN and infinity are refused" in message


# -- ranges, combinations, data, models and growth, before compute -------------------------

def _empty_imagenet(root: Path) -> Path:
    for part in ("train", "val"):
        (root / part / "n01").mkdir(parents=True)
    return root


BEFORE_COMPUTE = [
    # (chapter, changes, fragment of the message)
    ("sensli", {"lr_fnn": 0.0}, "parameter 'lr_fnn' must be float > 0; got 0.0"),
    ("sensli", {"lr_factor_after_insertion": -1.0}, "'lr_factor_after_insertion' must be"),
    ("sensli", {"extra_plans": {"LI": {"where": "random_depth"}}}, "labels must be new names"),
    ("gradmax", {"cifar_train": 60000}, "parameter 'cifar_train': must be at most the 50000"),
    ("gradmax", {"cifar_test": 20000}, "parameter 'cifar_test': must be at most the 10000"),
    ("gradmax", {"cifar_first_growth": 10}, "parameter 'cifar_first_growth': the first growth "
                                            "(step 10) must come before cifar_steps (6)"),
    ("gradmax", {"cifar_interval": 5}, "parameter 'cifar_interval': the last growth"),
    ("gradmax", {"cifar_factor": 1.0}, "parameter 'cifar_factor' must be float > 1; got 1.0"),
    ("gradmax", {"cifar_factor": 1.01}, "parameter 'cifar_factor': vgg11 at cifar_width"),
    ("gradmax", {"cifar_batch_size": 300}, "parameter 'cifar_batch_size': must not exceed"),
    ("gradmax", {"cifar_epsilon": 0.0}, "parameter 'cifar_epsilon' must be float > 0"),
    ("gradmax", {"ts_lr": 0.0}, "parameter 'ts_lr' must be float > 0"),
    ("gradmax", {"cifar_archive": "/nonexistent/cifar10.tar.gz"},
     "parameter 'cifar_archive': no CIFAR-10 archive at /nonexistent/cifar10.tar.gz"),
    ("nagn", {"configurations": [[[4]] * 6]},
     "parameter 'configurations': the model vgg built from [[4], [4], [4], [4], [4], [4]] "
     "cannot take inputs of shape (3, 32, 32)"),
    ("nagn", {"fig1_widths": [[4]] * 6}, "parameter 'fig1_widths': the model vgg"),
    ("nagn", {"configurations": [[[4]], [[4]]]}, "[[4]] is given twice"),
    ("nagn", {"n_test": 20000}, "parameter 'n_test': must be at most the 10000"),
    ("nagn", {"n_val": 49700}, "parameter 'n_train': n_train + n_val must not exceed the 50000"),
    ("nagn", {"w_acc": 5}, "parameter 'w_acc': a growth compares two windows"),
    ("nagn", {"lr": 0.0}, "parameter 'lr' must be float > 0"),
    ("nagn", {"batch_size": 500}, "parameter 'batch_size': must not exceed n_train (400)"),
    ("fragrow", {"lr": 0.0}, "parameter 'lr' must be float > 0; got 0.0"),
    ("fragrow", {"alpha": -4.0}, "parameter 'alpha' must be float > 0 and <= 100; got -4.0"),
    ("fragrow", {"alphas": [2.0, 0.0]}, "parameter 'alphas' must be a list of float > 0"),
    ("fragrow", {"momentum": 1.0}, "parameter 'momentum' must be float >= 0 and < 1"),
    ("fragrow", {"n_train": [60000, 256]}, "parameter 'n_train': every entry plus n_val (64) "
                                           "must not exceed the 50000 training images"),
    ("fragrow", {"n_test": 20000}, "parameter 'n_test': must be at most the 10000 test images"),
    ("fragrow", {"batch_size": 200}, "parameter 'batch_size': must not exceed the smallest "
                                     "n_train (128)"),
    ("fragrow", {"regimes": ["a", "a"]}, "parameter 'regimes': names must differ"),
]


@pytest.mark.parametrize(("name", "changes", "fragment"), BEFORE_COMPUTE)
def test_bad_values_and_combinations_are_refused(name, changes, fragment):
    assert fragment in refused(name, changes)


@pytest.mark.parametrize(("name", "changes", "fragment"), [
    ("gradmax", {"image_dataset": "cifar100"}, "CIFAR-100 not found in"),
    ("gradmax", {"image_dataset": "imagenet", "cifar_models": ["mobilenet_v1"]},
     "ImageFolder tree not found"),
    ("fragrow", {"dataset": "cifar100"}, "CIFAR-100 not found in"),
    ("fragrow", {"dataset": "imagenet", "image_size": 16}, "no images in"),
])
def test_a_data_folder_that_exists_but_holds_no_images_is_refused(tmp_path, name, changes,
                                                                   fragment):
    if changes.get("image_size"):
        _empty_imagenet(tmp_path)
    message = refused(name, {**changes, "data_root": str(tmp_path)})
    assert message.startswith("parameter 'data_root'") and fragment in message
    assert str(tmp_path) in message


def test_data_sizes_are_checked_against_an_image_folder(tmp_path):
    root = _empty_imagenet(tmp_path)
    for part, n in (("train", 3), ("val", 2)):
        for i in range(n):
            Image.new("RGB", (16, 16)).save(root / part / "n01" / f"{i}.png")
    assert images.dataset_sizes("imagenet", root) == (3, 2)
    message = refused("fragrow", {"dataset": "imagenet", "data_root": str(root),
                                  "image_size": 16, "n_train": [2, 2], "n_val": 2})
    assert "must not exceed the 3 training images of imagenet" in message


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: data.spiral(n_per_class=0), "n_per_class must be an int >= 1, got 0"),
    (lambda: data.spiral(n_per_class=2.5), "n_per_class must be an int >= 1, got 2.5"),
    (lambda: data.spiral(test_fraction=NAN), "test_fraction must lie in (0, 1), got nan"),
    (lambda: data.spiral(turns=INF), "r0 and turns must be finite"),
    (lambda: data.teacher_student([20, 10, 10], 0, 0), "n (points of each part) must be"),
    (lambda: data.teacher_student([20, 0, 10], 10, 0), "widths must be at least two ints"),
])
def test_generated_data_refuse_bad_sizes(make, fragment):
    with pytest.raises(ValueError) as error:
        make()
    assert fragment in str(error.value)


# -- the notebook's parameters: unknown names, the preset under explicit values ------------

def _namespace(name: str, injected: dict) -> dict:
    """A kernel's globals after the parameters cell and papermill's injected cell."""
    defaults = notebook_parameters(name)
    cell = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items())
    return {**defaults, **injected, "In": ["", "preset = 'cpu'\n...", cell, "setup"]}


@pytest.mark.parametrize(("injected", "fragment"), [
    ({"n_seed": 5}, "unknown parameter(s) 'n_seed' (did you mean 'n_seeds'?) injected by "
                    "papermill"),
    ({"insertion_iterations_sweep": [1]}, "'insertion_sweep'?)"),
    ({"preset": "smok"}, "parameter 'preset' must be str one of 'smoke', 'lab', 'cpu', 'gpu'"),
])
def test_unknown_injected_names_are_refused(injected, fragment):
    with pytest.raises(ParameterError) as error:
        notebook_values("sensli", _namespace("sensli", injected))
    assert fragment in str(error.value)


@pytest.mark.parametrize("name", CHAPTERS)
def test_a_preset_applies_under_explicit_values_whichever_way_it_is_started(name):
    smoke = notebook_parameters(name, "smoke")
    by_runner = notebook_values(name, _namespace(name, {**smoke}))  # the runner injects all
    namespace = _namespace(name, {"preset": "smoke"})  # papermill -p preset smoke
    assert notebook_values(name, namespace) == by_runner == smoke
    assert all(namespace[k] == v for k, v in smoke.items())  # the notebook's globals too
    explicit = {"preset": "smoke", "n_seeds": 1, "threads": 2}
    on_top = notebook_values(name, _namespace(name, explicit))
    assert on_top == {**smoke, **explicit}


def test_names_papermill_injects_itself_are_accepted():
    injected = {"PAPERMILL_INPUT_PATH": "in.ipynb", "PAPERMILL_OUTPUT_PATH": "out.ipynb"}
    assert notebook_values("sensli", _namespace("sensli", injected)) == notebook_parameters(
        "sensli")


def test_a_notebook_run_by_hand_keeps_its_values():
    values = {**notebook_parameters("sensli"), "preset": "smoke", "In": ["", "preset = 1"]}
    assert notebook_values("sensli", values)["iterations"] == notebook_parameters(
        "sensli")["iterations"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_parameters_cell_declares_exactly_the_chapters_parameters(name):
    assert set(notebook_parameters(name)) == set(chapter(name).PARAMETERS)


def _papermill_refusal(tmp_path, monkeypatch, notebook: str, parameters: dict) -> str:
    import papermill

    path = REPO_ROOT / "notebooks" / f"{notebook}.ipynb"
    monkeypatch.setenv("GROWCORE_RESULTS", str(tmp_path / "results"))
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(path.parent),
                                   progress_bar=False, execution_timeout=PAPERMILL_TIMEOUT)
    assert error.value.ename == "ParameterError"
    assert not (tmp_path / "results").exists(), "nothing may be computed or written"
    return error.value.evalue


@pytest.mark.slow
@pytest.mark.parametrize(("parameters", "fragment"), [
    ({"n_seed": 5}, "unknown parameter(s) 'n_seed' (did you mean 'n_seeds'"),
    ({"lr_fnn": INF}, "parameter 'lr_fnn' must be float > 0 (NaN and infinity are refused)"),
    # the smoke preset applies: 100 is beyond its 60 iterations (fine under cpu's 1850)
    ({"preset": "smoke", "insertion_iteration": 100}, "must be below iterations (60)"),
    # an explicit value goes on top of the preset: smoke's insertion at 20 is beyond 15
    ({"preset": "smoke", "iterations": 15}, "must be below iterations (15); got 20"),
])
def test_papermill_refuses_before_compute(tmp_path, monkeypatch, parameters, fragment):
    assert fragment in _papermill_refusal(tmp_path, monkeypatch, "sensli", parameters)


# -- records -------------------------------------------------------------------------------

def _record(**fields) -> dict:
    return results.make_record("exp", {"lr": 0.1}, preset="smoke", seeds=[0],
                               wall_time_s=1.0, **fields)


def _strict_json(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null_with_a_note(tmp_path):
    record = _record(metrics={"loss": [[1.0, NAN, INF]], "final": [np.float32("nan")]})
    saved = _strict_json(results.save_record(record, tmp_path))
    assert saved["metrics"]["loss"] == [[1.0, None, None]] and saved["metrics"]["final"] == [None]
    assert saved["non_finite"]["count"] == 3
    assert saved["non_finite"]["first"][0] == "metrics.loss[0][1] = nan"
    assert record["non_finite"] == saved["non_finite"]  # the record in memory says so too


@pytest.mark.parametrize("fault", ["json.dump raises", "a value JSON cannot hold",
                                   "fsync fails"])
def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch, fault):
    record = _record(metrics={"loss": [1.0]})
    if fault == "json.dump raises":
        monkeypatch.setattr(results.json, "dump", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("disk full")))
    elif fault == "a value JSON cannot hold":
        record["metrics"]["model"] = object()
    else:
        monkeypatch.setattr(results.os, "fsync", lambda fd: (_ for _ in ()).throw(
            OSError("I/O error")))
    with pytest.raises((RuntimeError, TypeError, OSError)):
        results.save_record(record, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_record_is_on_disk_before_it_gets_its_name(tmp_path, monkeypatch):
    calls = []
    fsync, link = os.fsync, os.link
    monkeypatch.setattr(results.os, "fsync", lambda fd: (calls.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(results.os, "link", lambda a, b: (calls.append("link"), link(a, b))[1])
    results.save_record(_record(metrics={}), tmp_path)
    assert calls.index("fsync") < calls.index("link")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_status_and_latest_takes_complete_records_only(tmp_path):
    assert _record()["status"] == "complete"
    with pytest.raises(ValueError, match="status must be one of"):
        _record(status="partial")
    results.save_record(_record(metrics={"loss": [1.0]}), tmp_path)
    results.save_record(_record(metrics={"loss": [2.0]}, status="interrupted"), tmp_path)
    assert results.latest("exp", {"lr": 0.1}, tmp_path)["metrics"]["loss"] == [1.0]
    only = tmp_path / "only"
    results.save_record(_record(status="interrupted"), only)
    assert results.latest("exp", {"lr": 0.1}, only) is None
    assert results.is_complete({"name": "written before status existed"})


def test_a_broken_record_file_is_named(tmp_path):
    path = tmp_path / "exp--x--1.json"
    path.write_text('{"name": ')
    with pytest.raises(ValueError, match=f"{path}: not a JSON record"):
        results.load_record(path)


# -- CIFAR-10 archives and caches ------------------------------------------------------------

PER_CLASS = {"train": 2, "test": 1}


@pytest.fixture
def small_cifar(monkeypatch):
    """CIFAR-10 of two training and one test image per class (all ten classes)."""
    monkeypatch.setattr(images, "CIFAR10_PER_CLASS", PER_CLASS)


def write_archive(path: Path, per_class=PER_CLASS, broken: dict | None = None,
                  shade: int = 9) -> Path:
    """A CIFAR-10 archive of uniform JPEGs (blue level ``shade``); ``broken`` replaces members
    by name with bytes or with an image of another size."""
    broken = broken or {}
    with tarfile.open(path, "w:gz") as tar:
        for part, n in per_class.items():
            for label, name in enumerate(CIFAR10_CLASSES):
                for index in range(n):
                    member = f"cifar10-jpeg/{part}/{name}/{index:04d}.jpg"
                    content = broken.get(member)
                    if not isinstance(content, bytes):
                        buffer = io.BytesIO()
                        Image.new("RGB", content or (32, 32),
                                  (20 * label, 40 * index, shade)).save(buffer, "JPEG",
                                                                        quality=95)
                        content = buffer.getvalue()
                    info = tarfile.TarInfo(member)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    content = path.read_bytes()
    path.write_bytes(content[:int(len(content) * keep)])


FIRST = "cifar10-jpeg/train/airplane/0000.jpg"


@pytest.mark.parametrize(("fault", "fragment"), [
    ("truncated", "not a complete tar.gz archive"),
    ("partial", "a partial copy of CIFAR-10: train images per class {'bird': 1}"),
    ("unreadable image", f"member {FIRST} is not a readable image"),
    ("wrong size", f"member {FIRST} is 16x16, not 32x32"),
    ("no test part", "no images under <top>/test/<class>/*.jpg"),
])
def test_a_bad_archive_is_refused_and_never_cached(tmp_path, small_cifar, fault, fragment):
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    if fault == "partial":
        write_archive(archive)
        with tarfile.open(archive) as tar:  # rewrite without one bird image
            kept = [(m, tar.extractfile(m).read()) for m in tar if "bird/0001" not in m.name]
        with tarfile.open(archive, "w:gz") as tar:
            for member, content in kept:
                tar.addfile(member, io.BytesIO(content))
    elif fault == "no test part":
        write_archive(archive, {"train": 2})
    else:
        write_archive(archive, broken={"unreadable image": {FIRST: b"not a jpeg"},
                                       "wrong size": {FIRST: (16, 16)}}.get(fault))
        if fault == "truncated":
            _truncate(archive)
    with pytest.raises(DataError) as error:
        images.cifar10(root=tmp_path / "cache", archive=archive)
    assert str(archive) in str(error.value) and fragment in str(error.value)
    assert not (tmp_path / "cache" / images.JPEG_CACHE).exists()


def _rewrite_cache(cache: Path, change: str) -> None:
    with np.load(cache) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if change == "no y_test":
        del arrays["y_test"]
    elif change == "all labels 0":
        arrays["y_train"] = np.zeros_like(arrays["y_train"])
    elif change == "float images":
        arrays["X_train"] = arrays["X_train"].astype(np.float32)
    elif change == "no meta (older growcore)":
        del arrays["meta"]
    elif change == "one image less":
        arrays["X_train"], arrays["y_train"] = arrays["X_train"][1:], arrays["y_train"][1:]
    np.savez(cache, **arrays)


CACHE_FAULTS = [("truncated", "unreadable or truncated"), ("no y_test", "no y_test"),
                ("all labels 0", "a partial copy of CIFAR-10"),
                ("float images", "X_train is float32"),
                ("no meta (older growcore)", "has no meta entry"),
                ("one image less", "a partial copy of CIFAR-10")]


@pytest.mark.parametrize(("fault", "fragment"), CACHE_FAULTS)
def test_a_bad_cache_is_rebuilt_from_the_archive(tmp_path, small_cifar, fault, fragment):
    archive = write_archive(tmp_path / "cifar10-jpeg.tar.gz")
    first = images.cifar10(root=tmp_path, archive=archive)
    cache = tmp_path / images.JPEG_CACHE
    _truncate(cache) if fault == "truncated" else _rewrite_cache(cache, fault)
    with pytest.warns(UserWarning, match="rebuilding the CIFAR-10 cache") as caught:
        again = images.cifar10(root=tmp_path, archive=archive)
    (warning,) = [w.message for w in caught if issubclass(w.category, UserWarning)]
    assert fragment in str(warning) and str(cache) in str(warning)
    assert (again.X_train == first.X_train).all() and "decoded from" in again.source
    assert "cache" in images.cifar10(root=tmp_path, archive=archive).source  # and verified


@pytest.mark.parametrize(("fault", "fragment"), CACHE_FAULTS)
def test_a_bad_cache_without_its_archive_is_refused_with_the_fix(tmp_path, small_cifar, fault,
                                                                 fragment):
    archive = write_archive(tmp_path / "cifar10-jpeg.tar.gz")
    images.cifar10(root=tmp_path, archive=archive)
    cache = tmp_path / images.JPEG_CACHE
    _truncate(cache) if fault == "truncated" else _rewrite_cache(cache, fault)
    archive.unlink()
    with pytest.raises(DataError) as error:
        images.cifar10(root=tmp_path, archive=archive)
    message = str(error.value)
    assert str(cache) in message and fragment in message and f"delete {cache}" in message


def test_a_broken_cache_without_its_archive_is_refused_before_compute(tmp_path, small_cifar,
                                                                      monkeypatch):
    archive = write_archive(tmp_path / "cifar10-jpeg.tar.gz")
    images.cifar10(root=tmp_path, archive=archive)
    _truncate(tmp_path / images.JPEG_CACHE)
    archive.unlink()
    monkeypatch.setenv(images.ARCHIVE_ENV, str(archive))
    with pytest.raises(DataError, match=f"delete {tmp_path / images.JPEG_CACHE}"):
        images.cifar10_sizes(root=tmp_path)


def test_a_cache_of_another_archive_is_rebuilt_from_the_one_given(tmp_path, small_cifar):
    first = images.cifar10(root=tmp_path, archive=write_archive(tmp_path / "a.tar.gz"))
    other = write_archive(tmp_path / "b.tar.gz", shade=200)  # the same layout, other pixels
    with pytest.warns(UserWarning, match="made from another archive"):
        split = images.cifar10(root=tmp_path, archive=other)
    identity = images.archive_identity(other)
    assert identity["sha256"][:12] in split.source and not (split.X_train == first.X_train).all()
    _, meta = images.read_cache(tmp_path / images.JPEG_CACHE)
    assert meta["archive"]["sha256"] == identity["sha256"]
    assert meta["counts"] == {"train": [2] * 10, "test": [1] * 10}
    assert meta["shapes"]["X_train"] == [20, 3, 32, 32] and meta["dtypes"]["y_test"] == "int64"


def test_cifar10_sizes_come_from_the_cache_without_decoding(tmp_path, small_cifar):
    archive = write_archive(tmp_path / "cifar10-jpeg.tar.gz")
    with pytest.raises(DataNotFoundError, match="no CIFAR-10 archive at"):
        images.cifar10_sizes(root=tmp_path, archive=tmp_path / "absent.tar.gz")
    assert images.cifar10_sizes(root=tmp_path, archive=archive) == (50_000, 10_000)
    images.cifar10(root=tmp_path, archive=archive)
    assert images.cifar10_sizes(root=tmp_path, archive=archive) == (20, 10)
    with pytest.raises(ValueError, match="n_test = 11 exceeds the 10 test images"):
        images.subset_indices(20, 10, None, 0, 11, 0)


# -- CIFAR-100 and ImageFolder trees ---------------------------------------------------------

def write_cifar100(root: Path, n: int = 4) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part in ("train", "test"):
        entry = {"data": np.zeros((n, 3072), np.uint8), "fine_labels": [1] * n,
                 "coarse_labels": [0] * n}
        (folder / part).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(k) for k in range(100)],
                                                "coarse_label_names": ["c"] * 20}))
    return folder


@pytest.mark.parametrize(("fault", "fragment"), [
    ("truncated", "unreadable or truncated"),
    ("no labels", "no fine_labels"),
    ("short rows", "bytes of images for 4 labels"),
    ("empty file", "no (or empty) train"),
])
def test_bad_cifar100_files_are_named(tmp_path, fault, fragment):
    folder = write_cifar100(tmp_path)
    if fault == "truncated":
        _truncate(folder / "train")
    elif fault == "no labels":
        (folder / "train").write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8)}))
    elif fault == "short rows":
        (folder / "train").write_bytes(pickle.dumps({"data": np.zeros((4, 3000), np.uint8),
                                                     "fine_labels": [0] * 4}))
    else:
        (folder / "train").write_bytes(b"")
    with pytest.raises((DataError, DataNotFoundError)) as error:
        images.cifar100(root=tmp_path)
    assert str(folder) in str(error.value) and fragment in str(error.value)


def test_an_unreadable_image_in_an_image_folder_is_named(tmp_path):
    root = _empty_imagenet(tmp_path)
    Image.new("RGB", (16, 16)).save(root / "train" / "n01" / "0.png")
    (root / "val" / "n01" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"val/n01/0.png: not a readable image"):
        images.imagenet(root, size=8)
    (root / "val" / "n01" / "0.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"no images in .*val"):
        images.imagenet(root, size=8)


# -- the runner's own errors: one line naming the file ---------------------------------------

def test_an_out_path_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file")
    for target in (out, out / "below"):
        with pytest.raises(SystemExit) as stop:
            main(["--preset", "smoke", "--nb", "sensli", "--out", str(target)])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and error.count("\n") == 1
        assert f"{out} is a file, not a folder" in error


def test_a_yaml_error_in_a_preset_file_names_the_file_and_line(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "presets").mkdir()
    import nbformat

    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('preset = "cpu"')
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell]
    nbformat.write(notebook, tmp_path / "notebooks" / "alpha.ipynb")
    path = tmp_path / "presets" / "alpha.yml"
    path.write_text("smoke:\n  size: 1\n   colour: [red\ncpu: {}\n")
    with pytest.raises(RunnerError) as error:
        run_notebooks("smoke", out=tmp_path / "out", notebooks_dir=tmp_path / "notebooks",
                      presets_dir=tmp_path / "presets", progress_bar=False)
    message = str(error.value)
    assert message.startswith(f"{path}, line 3, column") and "YAML error" in message
    assert "\n" not in message and not (tmp_path / "out").exists()


# -- the runner stopped by a signal: the kernel first, nothing written after -----------------

SIGNAL_SCRIPT = """
import sys
from pathlib import Path
import nbformat
from growcore.runner import Stopped, run_notebooks
root = Path(sys.argv[1])
for folder in ("notebooks", "presets"):
    (root / folder).mkdir(parents=True)
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
cell = nbformat.v4.new_code_cell('preset = "cpu"')
cell.metadata["tags"] = ["parameters"]
body = ("import os, subprocess, time\\n"
        "child = subprocess.Popen(['sleep', '60'])\\n"
        f"open({str(root / 'pids')!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\\n"
        "time.sleep(5)\\n"
        f"open({str(root / 'after')!r}, 'w').write('written after the signal')\\n")
nb.cells = [cell, nbformat.v4.new_code_cell(body)]
nbformat.write(nb, root / "notebooks" / "slow.ipynb")
(root / "presets" / "slow.yml").write_text("smoke: {}\\ncpu: {}\\ngpu: {}\\n")
try:
    run_notebooks("smoke", out=root / "out", notebooks_dir=root / "notebooks",
                  presets_dir=root / "presets", progress_bar=False)
except Stopped:
    sys.exit(130)
"""
KERNEL_START_SECONDS = 120
AFTER_SECONDS = 7  # longer than the cell's sleep: a surviving kernel would write 'after'


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in state  # killed, not yet reaped by init


@pytest.mark.slow
@pytest.mark.parametrize("number", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_kernel_before_the_runner_exits(tmp_path, number):
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "project"
    runner = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while not (root / "pids").exists():
        assert time.monotonic() - start < KERNEL_START_SECONDS and runner.poll() is None
        time.sleep(0.2)
    time.sleep(0.2)  # let the write finish
    kernel, child = map(int, (root / "pids").read_text().split())
    runner.send_signal(getattr(signal, number))
    assert runner.wait(timeout=60) == 130
    assert _gone(kernel) and _gone(child)
    time.sleep(AFTER_SECONDS)
    assert not (root / "after").exists(), "the kernel went on after the signal"
    assert sorted(p.name for p in (root / "out").iterdir()) == ["registry.md",
                                                               "slow.failed.ipynb"]


@pytest.mark.parametrize(("error", "code", "fragment"), [
    ("cell", 1, "a cell failed (cell 4): ParameterError: parameter 'n_seeds' must be int >= 1"),
    ("signal", 130, "stopped by SIGTERM"),
])
def test_the_runner_reports_a_failed_cell_or_a_signal_in_one_line(monkeypatch, capsys, error,
                                                                  code, fragment):
    import papermill

    import growcore.runner as runner

    def fail(*args, **kwargs):
        if error == "signal":
            raise runner.Stopped("stopped by SIGTERM; the kernel was stopped")
        raise papermill.PapermillExecutionError(
            cell_index=3, exec_count=4, source="start_chapter(...)", ename="ParameterError",
            evalue="parameter 'n_seeds' must be int >= 1; got 0\n(more)", traceback=["..."])

    monkeypatch.setattr(runner, "run_notebooks", fail)
    with pytest.raises(SystemExit) as stop:
        main(["--preset", "smoke", "--nb", "sensli"])
    message = capsys.readouterr().err
    assert stop.value.code == code and fragment in message and message.count("\n") == 1
