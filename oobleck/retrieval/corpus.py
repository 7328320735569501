"""Corpora: passages from .jsonl/.json/.parquet files, a ``datasets.Dataset`` or Python lists.

Every retriever builds from the list of ``Passage`` this returns, so every source is read one
way: ``text_field`` is required, ``id_field`` defaults to the row number and ``title_field``
is optional. Ids must be unique, since metrics and hybrid fusion match passages by id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oobleck.errors import DataError
from oobleck.retrieval.passage import Passage

__all__ = ["load_corpus", "progress_bar"]


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr (transient); ``advance(n)`` on the yielded object. A no-op when disabled."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield _Advance(progress, task)


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass


class _Advance:
    def __init__(self, progress: Any, task: Any):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


def _rows_of_file(file: Path) -> tuple[Iterable[Any], int | None]:
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        size = file.stat().st_size

        def lines() -> Iterator[Any]:
            with open(file, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except ValueError as exc:
                            raise DataError(f"{file} line {number} is not valid JSON: {exc}") from None

        return lines(), (None if size else 0)
    if suffix == ".json":
        try:
            rows = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(rows, list):
            raise DataError(f"{file} must hold a JSON list of passages")
        return rows, len(rows)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading parquet corpora needs pyarrow: pip install pyarrow") from None
        try:
            table = pq.read_table(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
            raise DataError(f"cannot read {file} as parquet: {type(exc).__name__}: {exc}") from None
        return table.to_pylist(), table.num_rows
    raise DataError(f"{file}: unsupported corpus format {suffix or '(none)'}; use .jsonl, .json or .parquet")


def load_corpus(source: str | os.PathLike[str] | Iterable[Any], *, text_field: str = "text", id_field: str | None = "id",
                title_field: str | None = "title", progress: bool = True) -> list[Passage]:  # fmt: skip
    """Passages from a corpus file, a ``datasets.Dataset`` or a list of strings, dicts or passages.

    A row's text is ``text_field``; its id is ``id_field`` when the row has it (else the row
    number), its title ``title_field`` when present. ``DataError`` names the first bad row.
    """
    if isinstance(source, (str, os.PathLike)):
        file = Path(source)
        if not file.is_file():
            raise DataError(f"corpus file {file} does not exist")
        rows, total = _rows_of_file(file)
        where = str(file)
    else:
        rows, where = source, "corpus"
        total = len(source) if hasattr(source, "__len__") else None  # type: ignore[arg-type]
    passages: list[Passage] = []
    seen: dict[str, int] = {}
    with progress_bar(f"reading {Path(where).name}", total, progress) as bar:
        for i, row in enumerate(rows):
            passage = _passage(row, i, where, text_field, id_field, title_field)
            if passage.id in seen:
                raise DataError(f"{where}: rows {seen[passage.id]} and {i} share the id {passage.id!r}; passage ids must be unique")
            seen[passage.id] = i
            passages.append(passage)
            if i % 1000 == 999:
                bar.advance(1000)
        bar.advance(len(passages) % 1000)
    if not passages:
        raise DataError(f"{where}: the corpus is empty")
    return passages


def _passage(row: Any, i: int, where: str, text_field: str, id_field: str | None, title_field: str | None) -> Passage:
    if isinstance(row, Passage):
        return row if row.id else Passage(row.text, id=str(i), title=row.title)
    if isinstance(row, str):
        return Passage(row, id=str(i))
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: row {i} is a {type(row).__name__}, not a text or an object")
    text = row.get(text_field)
    if not isinstance(text, str):
        raise DataError(f"{where}: row {i} has no text field {text_field!r} (keys: {sorted(map(str, row))})")
    pid = row.get(id_field) if id_field else None
    title = row.get(title_field) if title_field else None
    return Passage(text, id=str(i) if pid is None else str(pid), title="" if title is None else str(title))
