"""Self-describing result records, written atomically and never overwritten.

A record is one JSON file holding the configuration, the seeds, the code version, the library
versions, the device, the wall time, its status and the metrics per step. Its file name is
``<name>--<config hash>--<UTC time>-<counter>.json``: a second run with the same configuration
writes a second file next to the first, and :func:`latest` finds the newest complete one.

The files are standard JSON (any JSON reader takes them): a NaN or infinite number is written
as ``null`` and the record's ``non_finite`` entry says how many there were and where the
first ones are. A record is flushed to disk (fsync) before it gets its name, and a failed
write leaves no file behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import growcore
from growcore.paths import repo_root, results_dir


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def code_version() -> str:
    """Git commit of the repository (with ``+dirty`` for uncommitted changes), if known."""
    root = repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: str | torch.device = "cpu") -> dict:
    """Versions and hardware that produced a result."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"growcore": growcore.__version__, "code_version": code_version(),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "device": str(device), "device_name": name or platform.machine(),
            "torch_threads": torch.get_num_threads()}


STATUSES = ("complete", "interrupted")  # a run that ran to its end, or one stopped part-way
NON_FINITE_SHOWN = 10  # paths of non-finite numbers named in a record's note


def finite_copy(value, where: str = "", found: list | None = None):
    """``value`` (JSON-able: mappings, lists, numbers) with every NaN or infinite number
    replaced by None; ``found`` collects ``(path, repr)`` of those replaced. NumPy scalars
    become Python numbers."""
    if isinstance(value, dict):
        return {k: finite_copy(v, f"{where}.{k}" if where else str(k), found)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_copy(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value):
            return float(value)
        if found is not None:
            found.append((where, repr(float(value))))
        return None
    return value


def _standard_json(record: dict) -> dict:
    """The record as it is written: non-finite numbers as null, with a note saying so."""
    found: list = []
    clean = finite_copy({k: v for k, v in record.items() if k != "non_finite"}, found=found)
    if found:
        clean["non_finite"] = {
            "count": len(found), "first": [f"{path} = {value}" for path, value in
                                           found[:NON_FINITE_SHOWN]],
            "note": "NaN and infinite numbers are written as null (standard JSON)"}
    return clean


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_record(record: dict, directory: str | Path) -> Path:
    """Write ``record`` as ``<name>--<hash>--<time>-<counter>.json`` in ``directory``, atomically.

    The file is written to a temporary name, flushed to disk and linked to its name, so a
    crash never leaves a partial record, and a failure while writing (e.g. a value JSON
    cannot hold) leaves no file at all; an existing file is never replaced (a counter is
    appended instead). Non-finite numbers are written as null (:func:`finite_copy`), with
    the note ``non_finite``, which is also set in ``record``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    stem = f"{record['name']}--{config_hash(record['config'])}--{stamp}"
    clean = _standard_json(record)
    if "non_finite" in clean:
        record["non_finite"] = clean["non_finite"]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(clean, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        for counter in range(1000):
            path = directory / f"{stem}-{counter:03d}.json"  # sorts in order of writing
            try:
                os.link(tmp, path)  # fails if path exists: never overwrite
            except FileExistsError:
                continue
            _fsync_directory(directory)
            return path
        raise RuntimeError(f"could not find a free file name for {stem} in {directory}")
    finally:
        os.unlink(tmp)


def load_record(path: str | Path) -> dict:
    """The record in ``path``; a file that is not a JSON object raises ValueError naming it."""
    try:
        with open(path) as f:
            record = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON record ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON record (a {type(record).__name__})")
    return record


def is_complete(record: dict) -> bool:
    """Whether ``record`` describes a run that ran to its end (records written before the
    status existed did: only complete runs were saved then)."""
    return record.get("status", "complete") == "complete"


def latest(name: str, config: dict, directory: str | Path) -> dict | None:
    """The newest complete record named ``name`` with this configuration, or None (an
    interrupted run's record is never taken for a finished one)."""
    paths = sorted(Path(directory).glob(f"{glob.escape(name)}--{config_hash(config)}--*.json"))
    for path in reversed(paths):
        record = load_record(path)
        if is_complete(record):
            return record
    return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(name: str, config: dict, *, preset: str, seeds: list, device="cpu",
                wall_time_s: float, status: str = "complete", **fields) -> dict:
    """A self-describing record: what ran (name, configuration, seeds, preset), on what
    (environment: code version, library versions, device), how long, whether it ran to its
    end (``status``: one of :data:`STATUSES`), and ``fields`` (the metrics, and the plan's
    description where a plan grew the model). Every driver builds its records here."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}; got {status!r}")
    return {"name": name, "created": now(), "preset": preset, "status": status,
            "config": config, "seeds": list(seeds), "environment": environment(device),
            "wall_time_s": wall_time_s, **fields}


def store(record: dict, directory: str | Path | None = None, save: bool = True) -> dict:
    """Save ``record`` (:func:`save_record`, default folder :func:`results_dir`) and note its
    ``path`` in it; with ``save=False`` return it unsaved."""
    if save:
        record["path"] = str(save_record(record, directory or results_dir()))
    return record
