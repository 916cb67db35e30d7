"""Saved responses become sample records matched to their benchmark problems; bad rows are rejected with file:line."""

from __future__ import annotations

import json

import pytest

from longcot import records
from longcot.errors import ConfigError, InputError
from longcot.eval.config import EvalConfig, ModelEntry
from longcot.eval.responses import load_responses
from longcot.eval.stage import benchmark_problems, collect_samples, generate_config_for, student_entry
from longcot.problems import benchmarks

from conftest import AIME_TRACES, MATH_TRACES


def test_the_shared_traces_all_match_their_benchmark_problems():
    math = load_responses(str(MATH_TRACES))
    aime = load_responses(str(AIME_TRACES))
    assert (len(math.rows), len(math.rejected), math.matched) == (500, 0, 500)
    assert (len(aime.rows), len(aime.rejected), aime.matched) == (30, 0, 30)
    assert math.benchmarks == {"math500"} and aime.benchmarks == {"aime24"}
    math500 = benchmarks.iter_problems(benchmarks.get_benchmark("math500"))
    registry = {records.problem_key(r["problem"]): r for r in math500}
    assert {r["problem_id"] for r in math.rows} == {r["problem_id"] for r in registry.values()}
    with open(MATH_TRACES, encoding="utf-8") as saved:  # each trace's own reference answer is the registry's
        assert all(registry[records.problem_key(row["problem"])]["reference_answer"].strip()
                   == str(row["reference_answer"]).strip() for row in map(json.loads, saved))
    first = math.rows[0]
    assert first["source"] == "benchmark:math500" and first["sample_index"] == 0
    assert json.loads(first["metadata"])["saved"]["original_pred"] is not None  # unknown columns kept


def test_bad_rows_are_rejected_with_file_and_line(tmp_path):
    gsm = next(benchmarks.iter_problems(benchmarks.get_benchmark("gsm8k")))
    lines = [
        json.dumps({"benchmark": "gsm8k", "problem": gsm["problem"], "response": "\\boxed{18}"}),
        "{not json",
        json.dumps({"benchmark": "gsm8k", "response": "x"}),
        json.dumps({"benchmark": "gsm8k", "problem": gsm["problem"]}),
        json.dumps({"benchmark": "mmlu", "problem": "p", "response": "r"}),
        json.dumps({"problem": "What is 2+2?", "response": "4"}),  # no benchmark, no reference: nothing to check
        json.dumps({"problem": "What is 2+3?", "response": "5", "reference_answer": "5"}),
        json.dumps({"benchmark": "gsm8k", "problem": "  " + gsm["problem"].replace(" ", "  "), "response": "18"}),
    ]
    path = tmp_path / "saved.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_responses(str(path))
    reasons = [r["reason"] for r in loaded.rejected]
    assert reasons[0].startswith(f"{path}:2: malformed JSON")
    assert reasons[1] == f"{path}:3: no `problem` text"
    assert reasons[2] == f"{path}:4: no `response` text"
    assert reasons[3].startswith(f"{path}:5: unknown benchmark 'mmlu'")
    assert reasons[4].startswith(f"{path}:6: nothing to check the response against")
    assert len(loaded.rows) == 3
    a, free, b = loaded.rows
    # the same problem twice (whitespace aside): two samples of one problem, the benchmark's gold answer
    assert a["problem_id"] == b["problem_id"] == gsm["problem_id"] and (a["sample_index"], b["sample_index"]) == (0, 1)
    assert a["reference_answer"] == "18" and a["id"] != b["id"]
    assert free["source"] == f"file:{path}" and free["reference_answer"] == "5"


def test_a_longcot_record_file_is_read_as_saved_responses(tmp_path):
    problem = next(benchmarks.iter_problems(benchmarks.get_benchmark("aime24")))
    row = {**records.for_sample(problem, 3), "response": "\\boxed{204}", "output_tokens": 7, "model": "m"}
    own = records.new_problem("What is 6 * 7?", source="file:mine.jsonl", reference_answer="42")
    mine = {**records.for_sample(own, 1), "response": "\\boxed{42}", "verdict": "incorrect"}
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(records.conform(r)) + "\n" for r in (row, mine)))
    loaded = load_responses(str(path))
    bench_row, own_row = loaded.rows
    assert bench_row["output_tokens"] == 7 and bench_row["model"] == "m"
    assert bench_row["problem_id"] == problem["problem_id"] and bench_row["id"] == row["id"]  # same sample, same id
    assert (own_row["id"], own_row["source"], own_row["reference_answer"]) == (mine["id"], "file:mine.jsonl", "42")


def test_an_empty_file_and_an_unknown_benchmark_option_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.jsonl: holds no rows"):
        load_responses(str(empty))
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        load_responses(str(MATH_TRACES), benchmark="nope")


def test_student_entry_uses_the_train_stage_artifacts():
    entry = ModelEntry(name="student", model="@student")
    merged = student_entry(entry, {"student_model": "/runs/x/merged", "student_adapter": "/a"})
    assert merged.model == "/runs/x/merged" and merged.adapter is None
    lora = student_entry(entry, {"student_base": "embedded:smollm2-135m-instruct", "student_adapter": "/a"})
    assert (lora.model, lora.adapter) == ("embedded:smollm2-135m-instruct", "/a")
    with pytest.raises(ConfigError, match="no student was trained earlier"):
        student_entry(entry, {})
    with pytest.raises(ConfigError, match="with the vllm backend, which needs a merged model.*train.merge: true"):
        student_entry(entry, {"student_base": "Qwen/Qwen2.5-7B-Instruct", "student_adapter": "/a"}, "vllm")


def test_per_model_generate_overrides_are_validated_naming_the_field():
    config = EvalConfig.model_validate({"generate": {"sampling": {"n": 4, "max_tokens": 64}},
                                        "models": [{"name": "base"}, {"name": "t", "generate": {"sampling": {"n": 0}}}]})
    base = generate_config_for(config.models[0], config, 0)
    assert base.sampling.n == 4 and base.model == "embedded:smollm2-135m-instruct"
    with pytest.raises(ConfigError, match=r"eval.models\[1\] \(t\).generate: sampling.n"):
        generate_config_for(config.models[1], config, 1)


def test_config_defaults_and_checks():
    assert [m.name for m in EvalConfig().model_entries()] == ["base"]
    assert EvalConfig(responses=[{"name": "r", "path": "x.jsonl"}]).model_entries() == []
    assert EvalConfig(k=[8, 1, 4, 4]).k == [1, 4, 8]
    with pytest.raises(ValueError, match="duplicate names"):
        EvalConfig(models=[{"name": "a"}, {"name": "a"}])


def test_benchmark_problems_carry_the_registry_instruction_and_only_expected_samples_count():
    problems = benchmark_problems(["gsm8k", "gpqa"], benchmarks.load_registry(), 2)
    assert len(problems) == 4
    gpqa = json.loads(problems[2]["metadata"])
    assert gpqa["instruction"] == benchmarks.get_benchmark("gpqa").instruction and gpqa["benchmark"] == "gpqa"
    other = records.new_problem("not in this evaluation", source="benchmark:gsm8k")
    generated = [{**records.for_sample(problems[0], 0), "response": "x"}, records.for_sample(other, 0)]
    rows, missing = collect_samples(generated, problems, 2, "m")
    assert missing == 7 and len(rows) == 8 and rows[0]["response"] == "x"
    assert all(r["finish_reason"] == "error" and r["response"] is None for r in rows[1:])
    with pytest.raises(ConfigError, match="unknown benchmark 'mmlu'"):
        benchmark_problems(["mmlu"], benchmarks.load_registry(), None)
