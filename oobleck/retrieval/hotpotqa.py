"""HotPotQA-style data from a local file: questions, answers, gold titles and context paragraphs.

Reads the official release (a JSON list with ``_id``, ``question``, ``answer``,
``supporting_facts: [[title, sentence], ...]`` and ``context: [[title, [sentences]], ...]``)
and the Hugging Face export (``id``, ``supporting_facts: {"title": [...], "sent_id": [...]}``,
``context: {"title": [...], "sentences": [[...]]}``), as .json, .jsonl or .parquet. Each
question becomes an ``Example`` whose input is ``question`` and whose labels are ``answer``
and ``gold_titles`` (the supporting paragraphs), which is what ``answer_exact_match``,
``answer_f1``, ``passage_recall`` and ``all_gold_retrieved`` score. ``hotpotqa_corpus``
turns the context paragraphs into passages (the distractor setting), one per title.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from oobleck.errors import DataError
from oobleck.example import Example
from oobleck.retrieval.passage import Passage

__all__ = ["hotpotqa_corpus", "load_hotpotqa"]


def _records(file: Path) -> list[Any]:
    suffix = file.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DataError(f"{file} must hold a JSON list of questions")
            return data
        if suffix == ".jsonl":
            with open(file, encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pylist()
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{file} is not valid JSON: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for unreadable files
        raise DataError(f"cannot read {file}: {type(exc).__name__}: {exc}") from None
    raise DataError(f"{file}: unsupported format {suffix or '(none)'}; use .json, .jsonl or .parquet")


def _pairs(value: Any, first: str, second: str, where: str) -> list[tuple[Any, Any]]:
    """``[[a, b], ...]`` (official) or ``{first: [...], second: [...]}`` (Hugging Face) as pairs."""
    if isinstance(value, Mapping):
        a, b = value.get(first), value.get(second)
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            raise DataError(f"{where}: expected {{{first!r}: [...], {second!r}: [...]}} of equal length")
        return list(zip(a, b, strict=True))
    if isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        return [(p[0], p[1]) for p in value]
    raise DataError(f"{where}: expected a list of [{first}, {second}] pairs")


def load_hotpotqa(path: str | os.PathLike[str], *, limit: int | None = None) -> list[Example]:
    """Examples with input ``question`` and labels ``answer``, ``gold_titles``, ``paragraphs``, ``type``, ``level``.

    ``paragraphs`` are the question's context paragraphs as ``{"title", "text"}``. Questions
    without an answer (the official test set) keep ``answer`` as ``""``.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"HotPotQA file {file} does not exist")
    examples = []
    for i, record in enumerate(_records(file)[:limit]):
        where = f"{file}: question {i}"
        if not isinstance(record, Mapping) or not isinstance(record.get("question"), str):
            raise DataError(f"{where} has no 'question' text")
        facts = _pairs(record.get("supporting_facts", []), "title", "sent_id", f"{where} supporting_facts")
        context = _pairs(record.get("context", []), "title", "sentences", f"{where} context")
        paragraphs = []
        for title, sentences in context:
            text = "".join(sentences) if isinstance(sentences, list) else str(sentences)
            paragraphs.append({"title": str(title), "text": text.strip()})
        examples.append(
            Example(
                id=str(record.get("_id", record.get("id", i))),
                question=record["question"],
                answer=str(record.get("answer", "")),
                gold_titles=list(dict.fromkeys(str(title) for title, _ in facts)),
                paragraphs=paragraphs,
                type=str(record.get("type", "")),
                level=str(record.get("level", "")),
            ).with_inputs("question")
        )
    if not examples:
        raise DataError(f"{file} holds no questions")
    return examples


def hotpotqa_corpus(examples: Iterable[Mapping[str, Any]]) -> list[Passage]:
    """One passage per distinct title among the examples' context paragraphs (id and title: the title)."""
    passages: dict[str, Passage] = {}
    for example in examples:
        for paragraph in example.get("paragraphs") or []:
            title = paragraph["title"]
            if title not in passages:
                passages[title] = Passage(paragraph["text"], id=title, title=title)
    if not passages:
        raise DataError("the examples carry no context paragraphs to build a corpus from")
    return list(passages.values())
