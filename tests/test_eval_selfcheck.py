"""Scoring is right by construction: every shipped benchmark's own answers score 100% through the verify
stage (HumanEval's canonical solutions through the sandbox), and shuffled answers score near chance."""

from __future__ import annotations

import json

import pytest

from longcot import records
from longcot.cli import main
from longcot.eval.selfcheck import check_benchmark, derangement, reference_response
from longcot.problems import benchmarks

# problems checked per benchmark: all of the small ones; a seeded random sample of the large ones, to keep
# the suite's time (`longcot eval-check` with no --sample checks every problem; bench/RESULTS.md has that
# run, all 164 HumanEval canonical solutions included)
SAMPLES = {"aime24": None, "amc23": None, "gpqa": None, "humaneval": 40,
           "gsm8k": 60, "math500": 40, "minerva_math": 30, "olympiadbench": 40}


def test_derangement_moves_every_item():
    for count in (2, 3, 10, 101):
        perm = derangement(count, seed=count)
        assert sorted(perm) == list(range(count)) and all(perm[i] != i for i in range(count))


def test_reference_responses_take_the_form_the_instruction_asks_for():
    gsm = next(benchmarks.iter_problems(benchmarks.get_benchmark("gsm8k")))
    assert reference_response(gsm).endswith("$\\boxed{18}$.") and reference_response(gsm).startswith("<think>")
    code = next(benchmarks.iter_problems(benchmarks.get_benchmark("humaneval")))
    tests = records.json_field(code, "tests")
    assert f"```python\n{tests['prompt']}{tests['canonical_solution']}\n```" in reference_response(code)


def test_the_registry_ships_exactly_the_checked_benchmarks():
    assert sorted(benchmarks.load_registry()) == sorted(SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_references_score_100_and_shuffled_answers_score_near_chance(name):
    check = check_benchmark(benchmarks.get_benchmark(name), sample=SAMPLES[name], seed=1)
    assert check.failures == [] and check.reference_accuracy == 1.0
    assert check.nodes  # scored on Ray, by the verify stage's actors, as the eval stage scores
    assert check.shuffled_accuracy <= check.chance + check.allowance, check
    if name == "gpqa":  # four letters: a shuffle coincides about a quarter of the time
        assert 0.15 < check.chance < 0.35


def _user_benchmark(directory, answer_extract: str) -> None:
    rows = [{"q": f"What is {a} + {b}?", "sol": f"{a} + {b} = {a + b}. #### {a + b}"} for a, b in
            [(2, 3), (10, 7), (40, 2), (9, 9), (100, 1), (6, 7)]]
    (directory / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "sums.yaml").write_text(
        "name: sums\nfile: sums.jsonl\ndomain: math\nanswer_type: math\nfields: {problem: q, answer: sol}\n"
        f"answer_extract: {answer_extract}\ninstruction: Put the sum in \\boxed{{}}.\n"
    )


@pytest.mark.slow
def test_a_user_benchmark_is_checked_and_a_wrong_entry_is_caught(tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    _user_benchmark(good, "after_hashes")
    _user_benchmark(bad, "boxed")  # the answer field has no \boxed{}: no reference answers at all
    with pytest.raises(SystemExit) as done:
        main(["eval-check", "sums", "--benchmark-dir", str(good), "--json", str(tmp_path / "good.json")])
    assert done.value.code == 0
    result = json.loads((tmp_path / "good.json").read_text())[0]
    assert result["ok"] and result["reference_accuracy"] == 1.0 and result["shuffled_accuracy"] == 0.0
    with pytest.raises(SystemExit) as done:
        main(["eval-check", "sums", "--benchmark-dir", str(bad)])
    assert done.value.code == 1
    assert "NO" in capsys.readouterr().out
