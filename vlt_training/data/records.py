"""Dataset records for training and evaluation, read through ``vlt_perception.datasets.get_dataset``."""

from __future__ import annotations

from collections.abc import Callable

from vlt_training.config import DataConfig, DatasetConfig


class DataError(RuntimeError):
    """A dataset could not be read or is empty; the message names the dataset and root."""


def load_records(ds: DatasetConfig, data: DataConfig, keep: Callable[[dict], bool] | None = None) -> list[dict]:
    """Records of one configured dataset: read, filtered by condition and ``keep``, sorted, limited."""
    try:
        from vlt_perception.datasets import get_dataset
    except ImportError as exc:  # the readers are a separate part of the project
        raise DataError(f"vlt_perception.datasets is not available: {exc}") from exc
    root = data.resolve_root(ds)
    try:
        records = get_dataset(ds.name, root, ds.split, **ds.options)
    except (FileNotFoundError, NotADirectoryError, KeyError, ValueError) as exc:
        raise DataError(f"dataset {ds.name!r} split {ds.split!r} at {root!r}: {exc}") from exc
    if ds.conditions is not None:
        wanted = set(ds.conditions)
        records = [r for r in records if r.get("condition") in wanted]
    if keep is not None:
        records = [r for r in records if keep(r)]
    records = sorted(records, key=lambda r: (str(r.get("condition", "")), str(r["image_id"])))
    if ds.limit is not None:
        records = records[: ds.limit]
    if not records:
        raise DataError(
            f"dataset {ds.name!r} split {ds.split!r} at {root!r}: no usable records"
            + (f" for conditions {ds.conditions}" if ds.conditions else "")
        )
    return records


def load_train_records(data: DataConfig, keep: Callable[[dict], bool] | None = None) -> list[dict]:
    """All training datasets concatenated (multi-source training simply mixes their records)."""
    return [r for ds in data.train for r in load_records(ds, data, keep)]
