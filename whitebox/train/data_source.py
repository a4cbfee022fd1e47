"""Where a run's data comes from: a built-in name, or a file or folder of your own, recorded with the run.

A task's ``data`` setting is either one of its built-in names or a path; ``resolve`` turns a path
into the absolute one the config saves, so ``eval``, ``measure`` and ``attention`` find the data
from any working directory. A run on your own data keeps ``data.json`` (``DATA_RECORD``) beside
its config: the SHA-256 of the source and what was read from it (class names and normalization
statistics for images; the files for text). ``check_record`` refuses to read a trained run's
data again if its bytes have changed since: the held-out split and the statistics would differ.
``ImageSource`` gives an image task ``dataset(split)`` over either kind of data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from whitebox.data.datasets import ImageDataset, available_datasets, load_dataset
from whitebox.data.user_images import ImageData, load_image_data
from whitebox.train.config import ConfigError
from whitebox.train.run_files import CHECKPOINT

DATA_RECORD = "data.json"
#: The seed of the held-out split of your own images (fixed, like the built-in datasets' split,
#: so runs with different training seeds are scored on the same images).
SPLIT_SEED = 0


def is_builtin(data: str, names: Iterable[str]) -> bool:
    """Whether ``data`` names a built-in dataset or corpus (a name wins over a path of that name)."""
    return data in set(names)


def resolve(data: str, names: Iterable[str], kind: str) -> str:
    """``data`` if it is a built-in name, else the absolute path of an existing file or folder."""
    names = sorted(names)
    if is_builtin(data, names):
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise ConfigError(
            f"unknown {kind} {data!r}; valid names: {', '.join(names)}, or the path of your own data "
            "(no file or folder of that name exists)"
        )
    return str(path.resolve())


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run_dir/data.json``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / DATA_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The record of ``run_dir``, or None if it has none."""
    file = Path(run_dir) / DATA_RECORD
    return json.loads(file.read_text()) if file.is_file() else None


def check_record(run_dir: Path, path: str, sha256: str) -> None:
    """Raise ``ConfigError`` if a trained run's record names other bytes than ``sha256``."""
    record = read_record(run_dir)
    if record is None or not (Path(run_dir) / CHECKPOINT).exists() or record["sha256"] == sha256:
        return
    raise ConfigError(
        f"{path} has changed since {run_dir} was trained on it (SHA-256 {record['sha256'][:12]}... "
        f"then, {sha256[:12]}... now): its held-out split and statistics would not be the run's"
    )


def read_own_images(config: Any) -> ImageData:
    """The images at ``config.data`` (a path), read with ``config.image_size`` and
    ``config.val_fraction`` and the fixed ``SPLIT_SEED``; a bad file is a ConfigError."""
    try:
        return load_image_data(config.data, config.image_size, config.val_fraction, SPLIT_SEED)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


class ImageSource:
    """For an image task (with ``config.data``, ``image_size``, ``val_fraction`` and ``run_dir``):
    the splits of a built-in dataset or of your own images, and their record."""

    config: Any
    run_dir: Path

    @cached_property
    def own_data(self) -> ImageData | None:
        """Your own images (both splits), or None for a built-in dataset."""
        if is_builtin(self.config.data, available_datasets()):
            return None
        data = read_own_images(self.config)
        check_record(self.run_dir, self.config.data, data.sha256)
        return data

    def dataset(self, split: str) -> ImageDataset:
        """The "train" or "test" split of the run's data."""
        if self.own_data is None:
            return load_dataset(self.config.data, split)
        return self.own_data.train if split == "train" else self.own_data.test

    def record_images(self, resume: bool) -> None:
        """Write ``data.json`` for your own images (kept as it is when a run resumes)."""
        if self.own_data is not None and not (resume and read_record(self.run_dir)):
            write_record(self.run_dir, self.own_data.spec())
