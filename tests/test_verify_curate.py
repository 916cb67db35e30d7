"""Curation, decontamination and the stats report, as pure functions on rows."""

from __future__ import annotations

import json

import pytest

from longcot.records import for_sample, new_problem
from longcot.verify.config import CurateConfig, DecontaminateConfig, VerifyConfig
from longcot.verify.curate import curate, reason_kind
from longcot.verify.decontaminate import BenchmarkIndex
from longcot.verify.stats import percentiles, verification_stats, write_histogram

THOUGHT = " ".join(f"Step {i}: add {i} apples to the basket." for i in range(60))


def _sample(problem: str, index: int, response: str, verdict: str = "correct", **fields) -> dict:
    row = for_sample(new_problem(problem, source="file:train.jsonl", reference_answer="7"), index)
    return {**row, "response": response, "verdict": verdict, "correct": verdict == "correct",
            "truncated": False, "thought_tokens": 100, "solution_tokens": 10, **fields}


def _config(**curate_fields) -> VerifyConfig:
    deco = curate_fields.pop("decontaminate", DecontaminateConfig(enabled=False))
    return VerifyConfig(curate=CurateConfig(decontaminate=deco, **curate_fields))


def test_filters_drop_with_reasons_and_keep_the_rest():
    rows = [
        _sample("p1", 0, THOUGHT + "answer 7"),
        _sample("p1", 1, THOUGHT + "answer 7"),  # exact duplicate of sample 0
        _sample("p1", 2, THOUGHT + "so the answer is 7"),  # near duplicate
        _sample("p1", 3, "A different route: 3 + 4 = 7, and that is all there is to it, done."),
        _sample("p1", 4, "Yet another different derivation that gets seven as the result of it."),  # over the cap
        _sample("p2", 0, "wrong", verdict="incorrect"),
        _sample("p2", 1, "cut", truncated=True),
        _sample("p3", 0, "tiny", thought_tokens=1, solution_tokens=1),
        _sample("p4", 0, "huge", thought_tokens=5000),
    ]
    result = curate(rows, _config(max_per_problem=2, min_tokens=10, max_tokens=4000))
    assert [r["sample_index"] for r in result.kept] == [0, 3]
    reasons = {row["problem"] + str(row["sample_index"]): reason for row, reason in result.dropped}
    assert reasons["p11"].startswith("exact duplicate of ")
    assert reasons["p12"].startswith("near duplicate of ") and "Jaccard" in reasons["p12"]
    assert reasons["p14"] == "over the per-problem cap of 2"
    assert reasons["p20"] == "verdict incorrect"
    assert reasons["p21"].startswith("truncated")
    assert reasons["p30"] == "too short: 2 tokens < min_tokens 10"
    assert reasons["p40"] == "too long: 5010 tokens > max_tokens 4000"
    assert len(result.kept) + len(result.dropped) == len(rows)


def test_curation_does_not_depend_on_row_order():
    rows = [_sample("p", i, f"response number {i} " + "word " * i) for i in range(6)]
    forward = curate(rows, _config(max_per_problem=3))
    backward = curate(list(reversed(rows)), _config(max_per_problem=3))
    assert sorted(r["id"] for r in forward.kept) == sorted(r["id"] for r in backward.kept)


def test_keep_all_verdicts_when_asked():
    rows = [_sample("p", 0, "a", verdict="incorrect"), _sample("p", 1, "b", verdict="no_answer")]
    config = VerifyConfig(keep_correct_only=False, curate=CurateConfig(decontaminate=DecontaminateConfig(enabled=False)))
    assert len(curate(rows, config).kept) == 2


@pytest.fixture(scope="module")
def index():
    return BenchmarkIndex(["gsm8k", "math500"], n=8)


def test_decontamination_finds_benchmark_problems_and_their_paraphrases(index):
    from longcot.problems.benchmarks import get_benchmark, iter_problems

    gsm8k = [row["problem"] for row in iter_problems(get_benchmark("gsm8k"), limit=3)]
    copied = index.match(gsm8k[1], 0.5)
    assert copied and copied.benchmark == "gsm8k" and copied.benchmark_index == 1 and copied.overlap == 1.0
    edited = gsm8k[2].replace(".", " indeed.", 1)  # one small edit keeps most 8-grams
    assert index.match(edited, 0.5).benchmark_index == 2
    fresh = "A train leaves the station at noon with forty passengers and picks up twelve more at each of five stops."
    assert index.match(fresh, 0.5) is None


def test_decontamination_reports_what_was_removed_and_why(index):
    from longcot.problems.benchmarks import get_benchmark, iter_problems

    leaked = next(iter_problems(get_benchmark("math500")))["problem"]
    rows = [_sample(leaked, 0, "x"), _sample(leaked, 1, "y"), _sample("Count the sheep in a field of clover.", 0, "z")]
    result = curate(rows, _config(decontaminate=DecontaminateConfig(benchmarks=["gsm8k", "math500"])), index=index)
    assert [r["problem"] for r in result.kept] == ["Count the sheep in a field of clover."]
    assert all(reason.startswith("contaminated: 100% of its 8-grams") and "math500 problem #0" in reason
               for _, reason in result.dropped)
    report = result.report["decontamination"]
    assert report["problems_removed"] == 1 and report["records_removed"] == 2
    assert report["removed"][0]["benchmark"] == "math500" and len(report["removed"][0]["ids"]) == 2


def test_unknown_benchmark_names_are_a_config_error():
    from longcot.errors import ConfigError

    with pytest.raises(ConfigError, match="decontaminate.benchmarks: unknown \\['nope'\\]"):
        BenchmarkIndex(["nope"])


def test_stats_report_rates_percentiles_and_histogram(tmp_path):
    rows = [_sample("p", i, f"r{i}", verdict="correct" if i % 2 else "incorrect", thought_tokens=i * 10,
                    solution_tokens=i, truncated=i == 0) for i in range(10)]
    rows[0]["domain"] = "code"
    kept = {r["id"] for r in rows if r["verdict"] == "correct"}
    stats = verification_stats(rows, kept, [(rows[0], "verdict incorrect"), (rows[2], "truncated: x")])
    assert stats["records"] == 10 and stats["kept"] == 5 and stats["acceptance_rate"] == 0.5
    assert stats["truncation_rate"] == 0.1
    assert stats["by_domain"]["code"]["records"] == 1 and stats["by_domain"]["math"]["kept"] == 5
    assert stats["by_source"]["file:train.jsonl"]["acceptance_rate"] == 0.5
    assert stats["tokens"]["all"]["thought"] == {"count": 10, "mean": 45.0, "p50": 40, "p90": 80, "p99": 90, "max": 90}
    assert stats["dropped"] == {"verdict incorrect": 1, "truncated": 1}
    json.dumps(stats)
    png = write_histogram(rows, kept, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert percentiles([]) == {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    assert reason_kind("near duplicate of abc (Jaccard 0.95)") == "near duplicate"
