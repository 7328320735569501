"""Loading examples from data files through Hugging Face ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import oobleck as ob

ROWS = [{"question": "2+2", "answer": "4"}, {"question": "capital of france", "answer": "paris"}]


def _write(folder: Path, suffix: str) -> Path:
    path = folder / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".csv":
        path.write_text("question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in ROWS))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_supported_format_loads_with_inputs_marked(tmp_path: Path, suffix: str) -> None:
    examples = ob.load_examples(_write(tmp_path, suffix), inputs="question")
    assert [dict(e) for e in examples] == ROWS
    assert all(e.input_keys == frozenset({"question"}) for e in examples)
    assert examples[1].inputs().toDict() == {"question": "capital of france"}
    assert examples[1].labels().toDict() == {"answer": "paris"}


def test_missing_column_names_the_columns(tmp_path: Path) -> None:
    with pytest.raises(ob.DataError, match=r"no column\(s\) \['context'\]; columns are \['question', 'answer'\]"):
        ob.load_examples(_write(tmp_path, ".jsonl"), inputs=["question", "context"])


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ob.DataError, match="does not exist"):
        ob.load_examples(tmp_path / "absent.jsonl", inputs="question")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(ob.DataError, match="unsupported data format .txt"):
        ob.load_examples(tmp_path / "data.txt", inputs="question")


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": \n not json at all\n')
    with pytest.raises(ob.DataError, match="cannot read"):
        ob.load_examples(bad, inputs="question")


def test_no_input_keys_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(ob.DataError, match="name the input keys"):
        ob.load_examples(_write(tmp_path, ".jsonl"), inputs="")


def test_records_from_a_datasets_dataset() -> None:
    import datasets

    from oobleck.data import examples_from_records

    table = datasets.Dataset.from_list(ROWS)
    examples = examples_from_records(table, ["question"])
    assert examples[0].question == "2+2" and examples[0].inputs().toDict() == {"question": "2+2"}
