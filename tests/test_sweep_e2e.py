"""The whole sweep on CPU, for real: every variant built, trained (LoRA, Ray Train), evaluated (the
embedded model generating, verify scoring) and tabulated, on local Ray; then run again to show that
finished variants are skipped and a failed one is retried. Its numbers mean nothing; the mechanism is
what is tested.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from conftest import MATH_TRACES
from longcot import records
from longcot.dlcot.config import DlcotLineage
from longcot.recordfiles import load_records, write_records


def unverified_traces(limit: int) -> list[dict]:
    """Real Sky-T1 traces that verify correct, as records without a verdict (the sweep verifies them itself).
    The first MATH-500 problem is left out: the eval scores it, and eval refuses problems a student trained on."""
    from longcot.problems.benchmarks import get_benchmark, iter_problems
    from longcot.verify import verify_records

    (scored,) = iter_problems(get_benchmark("math500"), limit=1)
    rows = []
    for line in MATH_TRACES.read_text(encoding="utf-8").splitlines():
        trace = json.loads(line)
        if not trace["original_correct"] or "<|end_of_solution|>" not in trace["response"]:
            continue
        if records.problem_key(trace["problem"]) == records.problem_key(scored["problem"]):
            continue
        problem = records.new_problem(trace["problem"], source="file:math500_sky-t1-27b.jsonl",
                                      reference_answer=trace["reference_answer"])
        row = records.for_sample(problem, 0) | {"response": trace["response"]}
        if verify_records([row])[0]["verdict"] == "correct":
            rows.append(row)
        if len(rows) == limit:
            break
    return rows


def sweep_job(tmp_path, source) -> dict:
    return {
        "name": "sweep-e2e",
        "runs_dir": str(tmp_path / "runs"),
        "ray": {"num_cpus": 2, "object_store_memory_mb": 512},
        "sweep": {
            "input": str(source),
            "limit": 4,
            "grid": [
                {"kind": "shuffle_steps", "ratios": [1.0]},
                # every input trace verifies correct, so this variant has nothing to train on: it must fail
                # alone, be reported, and not stop the others
                {"kind": "wrong_answer", "ratios": [1.0]},
            ],
            "unperturbed": False,  # its path (train + eval) is every trained variant's; the grid stays small
            "dlcot": {"segmenter": "rules"},
            "train": {
                "num_workers": 1,
                "max_steps": 2,
                "learning_rate": 1e-3,
                "lora": {"rank": 4, "alpha": 8},
                "data": {"cutoff_len": 192, "warn_truncated_share": 1.0},
                "logging_steps": 1,
            },
            "eval": {
                "benchmarks": ["gsm8k", "math500"],
                "limit": 1,
                "k": [1],
                "charts": False,
                "generate": {"sampling": {"max_tokens": 12}, "batch_size": 2},
            },
            "max_concurrent": 1,
        },
    }


def run_cli(argv):
    from longcot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.mark.slow
def test_sweep_trains_evaluates_and_tabulates_every_variant_then_skips_finished_ones(ray_local, tmp_path, capsys):
    source = tmp_path / "traces.jsonl"
    write_records(source, unverified_traces(6))
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump(sweep_job(tmp_path, source)))

    assert run_cli(["sweep", str(job_file), "--no-progress"]) == 1  # one variant failed, reported at the end
    printed = capsys.readouterr().out
    assert "failed wrong_answer" in printed

    run_dirs = sorted((tmp_path / "runs").glob("sweep-e2e-*"))
    assert len(run_dirs) == 1
    out = run_dirs[0] / "sweep"
    checked = load_records(out / "verified.jsonl")  # the sweep verified its input on Ray, with the verify actors
    assert len(checked) == 6 and all(r["verdict"] == "correct" and r["thought_tokens"] for r in checked)
    results = json.loads((out / "results.json").read_text())
    status = {row["variant"]: row["status"] for row in results["rows"]}
    assert status == {"base": "finished", "dlcot": "finished", "shuffle_steps-100": "finished",
                      "wrong_answer": "failed"}
    rows = {row["variant"]: row for row in results["rows"]}
    for name in ("base", "dlcot", "shuffle_steps-100"):
        assert set(rows[name]["accuracy"]) == {"gsm8k", "math500"}
        assert all(v is not None for v in rows[name]["accuracy"].values())
        assert rows[name]["average"] is not None and rows[name]["output_tokens"] > 0
    assert rows["base"]["reference"]["average"] == 56.7
    assert "no record could be trained on" in rows["wrong_answer"]["error"]

    variants = {v["name"]: v for v in results["variants"]}
    for name in ("dlcot", "shuffle_steps-100"):
        # really trained: an adapter was written, the optimizer stepped, on the variant's own data
        directory = variants[name]["directory"]
        assert (Path(directory) / "train" / "adapter" / "adapter_config.json").exists()
        assert variants[name]["stages"]["train"]["global_step"] == 2
        evaluated = load_records(Path(directory) / "eval" / "records.jsonl")
        assert len(evaluated) == 2 and all(r["verdict"] for r in evaluated)
    shuffled = load_records(Path(variants["shuffle_steps-100"]["directory"]) / "perturb" / "records.jsonl")
    assert len(shuffled) == 4 and all(r["response"] != r["original_response"] for r in shuffled)
    assert variants["shuffle_steps-100"]["stages"]["perturb"]["achieved_ratio"] == 1.0
    simplified = load_records(Path(variants["dlcot"]["directory"]) / "dlcot" / "records.jsonl")
    assert len(simplified) == 4 and all(records.lineage_detail(r, DlcotLineage) is not None for r in simplified)

    table = (out / "table.md").read_text()
    assert "| variant | status | gsm8k | math500 | average | avg output tokens | paper average |" in table
    for name in ("base", "dlcot", "shuffle_steps-100", "wrong_answer"):
        assert f"| {name} |" in table
    png = (out / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 400

    # again: the three finished variants are skipped, the failed one is tried again (and fails again)
    assert run_cli(["sweep", str(job_file), "--no-progress"]) == 1
    second = sorted((tmp_path / "runs").glob("sweep-e2e-*"))[-1] / "sweep" / "results.json"
    again = {row["variant"]: row["status"] for row in json.loads(second.read_text())["rows"]}
    assert again == {"base": "cached", "dlcot": "cached", "shuffle_steps-100": "cached", "wrong_answer": "failed"}
