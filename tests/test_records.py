"""The record schema: one Arrow schema, stable ids, lineage, and kill-safe record files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from longcot import records
from longcot.generate.config import GenerateLineage
from longcot.recordfiles import RecordWriter, existing_ids, load_records, read_records, write_records, BadLine


def _sample_rows():
    problem = records.new_problem("What is 2+3?", source="test", reference_answer=5, metadata={"k": [1, 2]})
    rows = []
    for i in range(3):
        row = records.for_sample(problem, i) | {"response": f"<think>t{i}</think> \\boxed{{5}}", "output_tokens": 7}
        row = records.add_lineage(row, GenerateLineage(backend="hf", model="m", seconds=0.5))
        row["segments"] = [
            {"kind": "exploration", "start": 0, "end": 2, "approach": 1, "cluster": 0, "label": "correct",
             "kept": True, "reason": None}
        ]
        rows.append(records.conform(row))
    return rows


def test_ids_are_stable_hashes_of_problem_and_sample_index():
    p1 = records.new_problem("x", source="s")
    p2 = records.new_problem("x", source="s")
    assert p1["id"] == p2["id"]
    assert records.for_sample(p1, 0)["id"] == records.for_sample(p2, 0)["id"]
    assert records.for_sample(p1, 0)["id"] != records.for_sample(p1, 1)["id"]
    assert records.new_problem("y", source="s")["id"] != p1["id"]


@pytest.mark.parametrize("name", ["out.parquet", "outdir", "out.jsonl"])
def test_round_trip_through_every_format(tmp_path, name):
    rows = _sample_rows()
    path = tmp_path / name
    assert write_records(path, rows) == 3
    back = load_records(path)
    assert back == rows
    assert records.lineage_detail(back[0], GenerateLineage) == GenerateLineage(backend="hf", model="m", seconds=0.5)
    assert records.json_field(back[0], "metadata") == {"k": [1, 2]}


def test_lineage_detail_is_typed_when_written_and_read_back_from_the_stored_json():
    """A detail is validated when written (a misspelt key fails there), stored as the JSON object of the keys
    the writer set, and read back typed; a detail as an earlier version wrote it (plain JSON, a key this
    version does not declare) still reads."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="secnods"):
        GenerateLineage(backend="hf", model="m", secnods=1.0)
    row = records.add_lineage({"id": "1"}, GenerateLineage(backend="hf", model="m", seconds=0.5))
    assert row["lineage"][-1]["stage"] == "generate"
    assert json.loads(row["lineage"][-1]["detail"]) == {"backend": "hf", "model": "m", "seconds": 0.5}
    old = {"stage": "generate", "at": "2026-01-01T00:00:00+00:00",
           "detail": json.dumps({"backend": "openai", "model": "m", "attempts": 3, "no_longer_written": 1,
                                 "sampling": {"temperature": 0.6, "top_p": 1.0, "max_tokens": 8, "seed": 5}})}
    read = records.lineage_detail({"lineage": [old]}, GenerateLineage)
    assert read.backend == "openai" and read.attempts == 3 and read.sampling.seed == 5 and read.seconds is None
    assert records.lineage_detail({"lineage": [*row["lineage"], old]}, GenerateLineage).backend == "openai"  # the last
    assert records.lineage_detail({"id": "1"}, GenerateLineage) is None


def test_parquet_on_disk_has_exactly_the_schema(tmp_path):
    write_records(tmp_path / "x.parquet", _sample_rows())
    assert pq.read_schema(tmp_path / "x.parquet").equals(records.SCHEMA)


def test_unknown_field_is_refused():
    with pytest.raises(KeyError, match="not in the record schema"):
        records.conform({"id": "1", "respones": "typo"})


def test_a_table_of_some_columns_reads_back_as_full_records():
    import pyarrow as pa

    table = pa.table({"id": ["a"], "problem": ["p"]})
    full = records.to_table(records.from_table(table))
    assert full.schema.equals(records.SCHEMA)
    assert full.to_pylist()[0]["response"] is None


def test_jsonl_writer_cuts_a_half_written_line_left_by_a_kill(tmp_path):
    path = tmp_path / "out.jsonl"
    rows = _sample_rows()
    write_records(path, rows[:2])
    with path.open("a") as handle:
        handle.write('{"id": "half-writ')  # what a SIGKILL mid-write leaves
    assert existing_ids(path) == {rows[0]["id"], rows[1]["id"]}
    with RecordWriter(path) as writer:
        writer.write(rows[2:])
    assert [r["id"] for r in load_records(path)] == [r["id"] for r in rows]


def test_parquet_dir_parts_are_whole_or_absent(tmp_path):
    rows = _sample_rows()
    out = tmp_path / "parts"
    with RecordWriter(out) as writer:
        writer.write(rows[:1])
        writer.write(rows[1:])
    (out / ".tmp-00009.parquet").write_bytes(b"garbage of a killed write")
    assert [r["id"] for r in load_records(out)] == [r["id"] for r in rows]  # a reader skips the temporary too
    with RecordWriter(out) as writer:  # reopening clears temporaries and appends after the last part
        writer.write([])
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert existing_ids(out) == {r["id"] for r in rows}


def test_malformed_jsonl_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    good = json.dumps(_sample_rows()[0])
    path.write_text(f"{good}\n{{broken\n[1, 2]\n")
    items = list(read_records(path))
    assert isinstance(items[0], dict)
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [(2, "malformed JSON"), (3, "expected a JSON object, got list")]
