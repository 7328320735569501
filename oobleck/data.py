"""Load examples from .jsonl, .json, .csv or .parquet files (through Hugging Face ``datasets``).

Users bring data in the formats they already have; ``inputs`` names the keys a program
receives, the rest become labels for the metric.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from oobleck.errors import DataError
from oobleck.example import Example

__all__ = ["examples_from_records", "load_examples"]

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def examples_from_records(records: Iterable[Mapping[str, Any]], inputs: Sequence[str], *, source: str = "data") -> list[Example]:
    """Examples from dicts (or a ``datasets.Dataset``), with ``inputs`` marked as input keys."""
    if not inputs:
        raise DataError(f"{source}: name the input keys (e.g. --inputs question)")
    examples = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(f"{source}: row {i} is a {type(record).__name__}, not an object")
        missing = [k for k in inputs if k not in record]
        if missing:
            raise DataError(f"{source}: row {i} lacks input key(s) {missing}; it has {sorted(record)}")
        examples.append(Example(dict(record)).with_inputs(*inputs))
    if not examples:
        raise DataError(f"{source}: no rows")
    return examples


def load_examples(path: str | os.PathLike[str], inputs: Sequence[str] | str, *, split: str = "train") -> list[Example]:
    """Read a data file into examples; ``inputs`` is a list of keys or ``"a,b"``."""
    file = Path(path)
    keys = [k.strip() for k in inputs.split(",")] if isinstance(inputs, str) else list(inputs)
    keys = [k for k in keys if k]
    builder = _BUILDERS.get(file.suffix.lower())
    if builder is None:
        raise DataError(f"{file}: unsupported data format {file.suffix or '(none)'}; use .jsonl, .json, .csv or .parquet")
    if not file.is_file():
        raise DataError(f"data file {file} does not exist")
    try:
        import datasets
    except ImportError:
        raise DataError("reading data files needs the 'datasets' package: pip install datasets") from None
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files={split: str(file)}, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for unreadable files
        raise DataError(f"cannot read {file} as {file.suffix[1:]}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    columns = list(table.column_names)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise DataError(f"{file}: no column(s) {missing}; columns are {columns}")
    return examples_from_records(table.to_list(), keys, source=str(file))
