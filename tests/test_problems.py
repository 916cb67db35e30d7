"""Problem sources: local files with a field mapping, HF datasets, shipped benchmarks, reasoning-gym."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longcot import records
from longcot.errors import ConfigError, InputError
from longcot.problems import benchmarks
from longcot.problems.config import BenchmarkSource, FileSource, GymSource, HFSource, ProblemsLineage
from longcot.problems.sources import Rejected, read_source

from conftest import MATH_TRACES

SHIPPED = ["aime24", "amc23", "gpqa", "gsm8k", "humaneval", "math500", "minerva_math", "olympiadbench"]
EXPECTED_ROWS = {"aime24": 30, "amc23": 40, "gpqa": 198, "gsm8k": 1319, "humaneval": 164, "math500": 500,
                 "minerva_math": 272, "olympiadbench": 675}


def test_registry_ships_every_benchmark():
    assert sorted(benchmarks.load_registry()) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_benchmark_loads_with_reference_answers(name):
    spec = benchmarks.get_benchmark(name)
    rows = list(benchmarks.iter_problems(spec))
    assert len(rows) == EXPECTED_ROWS[name]
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["problem"].strip() and row["source"] == f"benchmark:{name}"
        if spec.domain == "code":
            assert records.json_field(row, "tests")["entry_point"]
        else:
            assert row["reference_answer"], (name, row["metadata"])


def test_reference_answers_are_extracted_per_entry():
    gsm = next(benchmarks.iter_problems(benchmarks.get_benchmark("gsm8k")))
    assert gsm["reference_answer"] == "18"
    amc = next(benchmarks.iter_problems(benchmarks.get_benchmark("amc23")))
    assert amc["reference_answer"] == "27"
    minerva = next(benchmarks.iter_problems(benchmarks.get_benchmark("minerva_math")))
    assert "\\boxed" not in minerva["reference_answer"] and minerva["reference_answer"]
    gpqa = next(benchmarks.iter_problems(benchmarks.get_benchmark("gpqa")))
    assert gpqa["reference_answer"] in {"A", "B", "C", "D"}


def test_unknown_benchmark_lists_the_allowed_names():
    with pytest.raises(ConfigError, match="allowed: aime24, amc23"):
        benchmarks.get_benchmark("mmlu")


def test_a_user_adds_a_benchmark_with_a_yaml_and_a_jsonl(tmp_path, monkeypatch):
    (tmp_path / "tiny.jsonl").write_text('{"q": "1+1?", "a": "2"}\n{"q": "2+2?", "a": "4"}\n')
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nfile: tiny.jsonl\nfields: {problem: q, answer: a}\ninstruction: Answer in \\boxed{}.\n"
    )
    monkeypatch.setenv("LONGCOT_BENCHMARK_PATH", str(tmp_path))
    rows = list(read_source(BenchmarkSource(name="tiny")))
    assert [r["reference_answer"] for r in rows] == ["2", "4"]


def test_file_source_maps_fields_and_rejects_bad_rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"question": "What is 1+1?", "gold": 2, "uid": "a"}\n'
        "not json at all\n"
        '{"question": "", "gold": 3}\n'
        '{"other": "x"}\n'
        '{"question": "What is 2+2?", "gold": "4"}\n'
    )
    src = FileSource(path=str(path), fields={"problem": "question", "answer": "gold", "id": "uid"})
    items = list(read_source(src))
    good = [i for i in items if not isinstance(i, Rejected)]
    bad = [i for i in items if isinstance(i, Rejected)]
    assert [g["reference_answer"] for g in good] == ["2", "4"]
    assert records.json_field(good[0], "metadata") == {"source_id": "a", "uid": "a"}
    assert [b.reason.split(": ", 1)[0] for b in bad] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "malformed JSON" in bad[0].reason and "missing column 'question'" in bad[2].reason


def test_file_source_without_the_column_anywhere_is_an_input_error(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"question": "a"}\n{"question": "b"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl: no row has the problem column 'problem'.*question"):
        list(read_source(FileSource(path=str(path))))


def test_file_source_reads_parquet(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"problem": ["p1", "p2", "p3"], "answer": ["1", "2", "3"]}), path)
    rows = list(read_source(FileSource(path=str(path), limit=2)))
    assert [r["problem"] for r in rows] == ["p1", "p2"]


def test_missing_or_unreadable_file_names_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        list(read_source(FileSource(path=str(tmp_path / "nope.jsonl"))))
    # a line that is not UTF-8 is rejected with its number; the lines around it are read
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"problem": "p1", "answer": "1"}\n\xff\xfe\x00garbage\n{"problem": "p2", "answer": "2"}\n')
    items = list(read_source(FileSource(path=str(mixed))))
    assert [i["problem"] for i in items if isinstance(i, dict)] == ["p1", "p2"]
    (bad,) = [i for i in items if not isinstance(i, dict)]
    assert bad.reason.startswith(f"{mixed}:2: not UTF-8 text")


def test_hf_source_loads_a_saved_dataset_directory(tmp_path):
    import datasets

    ds = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"question": ["a?", "b?"], "answer": ["1", "2"]}),
         "test": datasets.Dataset.from_dict({"question": ["c?"], "answer": ["3"]})}
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    rows = list(read_source(HFSource(name=str(tmp_path / "saved"), split="test", fields={"problem": "question"})))
    assert [(r["problem"], r["reference_answer"]) for r in rows] == [("c?", "3")]
    assert rows[0]["source"].startswith("hf:")
    with pytest.raises(InputError, match="no split 'validation'"):
        list(read_source(HFSource(name=str(tmp_path / "saved"), split="validation")))
    with pytest.raises(InputError, match="no column 'problem'"):
        list(read_source(HFSource(name=str(tmp_path / "saved"), split="train")))


def test_reasoning_gym_problems_are_reproducible_and_carry_their_verifier_payload():
    a = list(read_source(GymSource(task="basic_arithmetic", size=4, seed=3)))
    b = list(read_source(GymSource(task="basic_arithmetic", size=4, seed=3)))
    assert [r["problem"] for r in a] == [r["problem"] for r in b] and len(a) == 4
    payload = records.json_field(a[0], "tests")
    assert payload["kind"] == "reasoning_gym" and payload["task"] == "basic_arithmetic"
    import reasoning_gym

    score = reasoning_gym.get_score_answer_fn("basic_arithmetic")
    assert score(a[0]["reference_answer"], payload["entry"]) == 1.0


def test_unknown_gym_task_is_a_config_error():
    with pytest.raises(ConfigError, match="reasoning-gym task 'no_such_task'"):
        list(read_source(GymSource(task="no_such_task")))


def test_problems_stage_counts_balance_and_rejects_go_to_a_file(tmp_path):
    from longcot.pipeline import run_single_stage
    from longcot.problems.config import ProblemsConfig

    path = tmp_path / "in.jsonl"
    path.write_text('{"problem": "a"}\nbroken\n{"problem": "a"}\n{"problem": "b"}\n')
    cfg = ProblemsConfig(sources=[{"kind": "file", "path": str(path)}])
    run_dir, result = run_single_stage("problems", cfg, input_path=None, output=str(tmp_path / "out.jsonl"),
                                       runs_dir=str(tmp_path / "runs"), progress=False)
    assert (result.records_in, result.records_out, result.records_rejected) == (4, 2, 2)
    rejected = [json.loads(line) for line in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert "in.jsonl:2" in rejected[0]["reason"] and "duplicate problem" in rejected[1]["reason"]
    assert run_dir.manifest["stages"]["problems"]["records_rejected"] == 2


def test_existing_traces_import_as_sample_records(tmp_path):
    src = FileSource(path=str(MATH_TRACES), limit=5,
                     fields={"problem": "problem", "answer": "reference_answer", "response": "response", "id": "idx"})
    rows = list(read_source(src))
    assert len(rows) == 5 and all(r["response"] and r["sample_index"] == 0 for r in rows)
    assert len({r["id"] for r in rows}) == 5
    assert records.lineage_detail(rows[0], ProblemsLineage).imported
    assert "original_correct" in records.json_field(rows[0], "metadata")


def test_cli_field_mapping_keeps_column_names_as_written(tmp_path):
    """`--field` names columns: `yes` and `1` are column names, not a boolean and a number (as a `--set` value
    would be read), and a pair without `=` is refused naming the option."""
    from typer.testing import CliRunner

    from longcot.cli import _register_commands, app
    from longcot.recordfiles import load_records

    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"yes": "What is 2 + 3?", "1": "5"}) + "\n")
    _register_commands()
    out = tmp_path / "problems.jsonl"
    result = CliRunner().invoke(app, ["problems", "-i", str(path), "-o", str(out), "--field", "problem=yes",
                                      "--field", "answer=1"])
    assert result.exit_code == 0, result.output
    [row] = load_records(out)
    assert (row["problem"], row["reference_answer"]) == ("What is 2 + 3?", "5")
    refused = CliRunner().invoke(app, ["problems", "-i", str(path), "-o", str(tmp_path / "p2.jsonl"),
                                       "--field", "problem"])
    assert isinstance(refused.exception, ConfigError)
    assert "--field 'problem': expected FIELD=COLUMN" in str(refused.exception)
