"""Self-describing result records, written atomically and never overwritten.

A record is one JSON file holding the configuration, the seeds, the code version, the library
versions, the device, the wall time and the metrics per step. Its file name is
``<name>--<config hash>--<UTC time>-<counter>.json``: a second run with the same configuration
writes a second file next to the first, and :func:`latest` finds the newest.
"""

from __future__ import annotations

import glob
import hashlib
import json
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


def save_record(record: dict, directory: str | Path) -> Path:
    """Write ``record`` as ``<name>--<hash>--<time>-<counter>.json`` in ``directory``, atomically.

    The file is written to a temporary name and renamed, so a crash never leaves a partial
    record; an existing file is never replaced (a counter is appended instead).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    stem = f"{record['name']}--{config_hash(record['config'])}--{stamp}"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    for counter in range(1000):
        path = directory / f"{stem}-{counter:03d}.json"  # sorts in order of writing
        try:
            os.link(tmp, path)  # fails if path exists: never overwrite
        except FileExistsError:
            continue
        os.unlink(tmp)
        return path
    raise RuntimeError(f"could not find a free file name for {stem} in {directory}")


def load_record(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def latest(name: str, config: dict, directory: str | Path) -> dict | None:
    """The newest record named ``name`` with this configuration, or None."""
    paths = sorted(Path(directory).glob(f"{glob.escape(name)}--{config_hash(config)}--*.json"))
    return load_record(paths[-1]) if paths else None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(name: str, config: dict, *, preset: str, seeds: list, device="cpu",
                wall_time_s: float, **fields) -> dict:
    """A self-describing record: what ran (name, configuration, seeds, preset), on what
    (environment: code version, library versions, device), how long, and ``fields`` (the
    metrics, and the plan's description where a plan grew the model). Every driver builds
    its records here."""
    return {"name": name, "created": now(), "preset": preset, "config": config,
            "seeds": list(seeds), "environment": environment(device),
            "wall_time_s": wall_time_s, **fields}


def store(record: dict, directory: str | Path | None = None, save: bool = True) -> dict:
    """Save ``record`` (:func:`save_record`, default folder :func:`results_dir`) and note its
    ``path`` in it; with ``save=False`` return it unsaved."""
    if save:
        record["path"] = str(save_record(record, directory or results_dir()))
    return record
