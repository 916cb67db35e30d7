"""Eval scores: pass@1 as the mean over samples, unbiased pass@k, majority vote, token efficiency."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from longcot import records
from longcot.eval.metrics import answer_key, majority_correct, pass_at_k, score_samples, score_variants

from conftest import AIME_TRACES, MATH_TRACES


def closed_form(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_closed_form_exactly_enough():
    for n in range(1, 31):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(closed_form(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_where_binomials_are_huge():
    # C(2000, 500) has ~490 digits: the product form never builds it, and still agrees
    for n, c, k in [(2000, 3, 500), (2000, 1, 1), (1000, 999, 2), (5000, 10, 100)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(closed_form(n, c, k)), rel=1e-9)


def test_pass_at_k_edge_values_and_bad_arguments():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k wrong samples: any k contain a right one
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)  # pass@1 is c/n
    for n, c, k in [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def sample(pid: str, index: int, answer: str | None, correct: bool, **extra) -> dict:
    row = records.for_sample(records.new_problem(f"problem {pid}", source="benchmark:gsm8k"), index)
    return {**row, "predicted_answer": answer, "correct": correct,
            "verdict": "correct" if correct else ("no_answer" if answer is None else "incorrect"), **extra}


def test_majority_vote_groups_spellings_and_ignores_missing_answers():
    votes = [sample("a", 0, "\\dfrac{1}{2}", True), sample("a", 1, "7", False), sample("a", 2, "\\frac{1}{2}", True),
             sample("a", 3, None, False), sample("a", 4, None, False)]
    assert majority_correct(votes) is True
    assert majority_correct([sample("a", 0, None, False)]) is False
    assert answer_key("\\left( 3, \\frac{\\pi}{2} \\right)") == answer_key("(3,\\frac{\\pi}{2})")


def test_majority_tie_goes_to_the_answer_seen_first():
    tie = [sample("a", 0, "5", False), sample("a", 1, "6", True), sample("a", 2, "6", True), sample("a", 3, "5", False)]
    assert majority_correct(tie) is False
    assert majority_correct(list(reversed(tie))) is False  # order is by sample_index, not list order


def test_code_problems_have_no_majority_vote():
    rows = [{**sample("c", i, None, i == 0), "domain": "code"} for i in range(3)]
    assert majority_correct(rows) is None


def test_scores_of_one_benchmark():
    rows = []
    # problem a: 3 of 4 right; problem b: 0 of 4; problem c: 4 of 4 -> pass@1 = (0.75 + 0 + 1) / 3
    for i, ok in enumerate([True, True, False, True]):
        rows.append(sample("a", i, "1" if ok else "2", ok, output_tokens=100, thought_tokens=80))
    for i in range(4):
        rows.append(sample("b", i, None, False, output_tokens=300, thought_tokens=300, truncated=True))
    for i in range(4):
        rows.append(sample("c", i, "9", True, output_tokens=20, thought_tokens=10))
    score = score_samples(rows, variant="base", benchmark="gsm8k", ks=[1, 2, 4, 8])
    assert score.problems == 3 and score.samples == 12 and score.samples_per_problem == 4
    assert score.pass_at_1 == pytest.approx((0.75 + 0 + 1) / 3)
    assert score.pass_at_k["pass@2"] == pytest.approx((pass_at_k(4, 3, 2) + 0 + 1) / 3)
    assert score.pass_at_k["pass@4"] == pytest.approx(2 / 3)
    assert "pass@8" not in score.pass_at_k and "pass@1" not in score.pass_at_k
    assert score.maj_at_n == pytest.approx(2 / 3)
    assert score.mean_output_tokens == pytest.approx((400 + 1200 + 80) / 12)
    assert score.mean_thought_tokens == pytest.approx((320 + 1200 + 40) / 12)
    assert score.mean_output_tokens_correct == pytest.approx((300 + 80) / 7)
    assert score.truncated_rate == pytest.approx(4 / 12)
    assert score.no_answer_rate == pytest.approx(4 / 12)
    assert score.verdicts == {"correct": 7, "incorrect": 1, "no_answer": 4}


def test_single_sample_has_no_majority_and_variants_split_by_benchmark():
    rows = [sample("a", 0, "1", True), sample("b", 0, "2", False)]
    math_row = {**sample("m", 0, "3", True), "source": "benchmark:math500"}
    scores = score_variants({"student": rows + [math_row], "base": rows}, ks=[1, 4])
    assert [(s.variant, s.benchmark) for s in scores] == [("student", "gsm8k"), ("student", "math500"), ("base", "gsm8k")]
    assert scores[0].maj_at_n is None and scores[0].pass_at_k == {}
    assert scores[0].pass_at_1 == 0.5 and scores[1].pass_at_1 == 1.0


def test_token_counts_are_the_transformers_tokenizers_on_real_traces():
    """The counter reads tokenizer.json with the tokenizers library, ids only: every count equals the length of
    what the model's transformers tokenizer encodes (the shipped traces: long, LaTeX, code, unicode)."""
    from longcot.models import DEFAULT_MODEL, load_tokenizer
    from longcot.tokens import TokenCounter

    texts = [json.loads(line)["response"] for path in (MATH_TRACES, AIME_TRACES)
             for line in path.read_text().splitlines()[:40]]
    expected = [len(ids) for ids in load_tokenizer(DEFAULT_MODEL)(texts, add_special_tokens=False)["input_ids"]]
    assert TokenCounter(DEFAULT_MODEL).count(texts) == expected and min(expected) > 100


def test_token_counts_fill_what_rows_lack_and_keep_what_the_backend_reported():
    from longcot.eval.metrics import fill_token_counts
    from longcot.tokens import TokenCounter
    from longcot.traces import parse_fields

    counter = TokenCounter("embedded:smollm2-135m-instruct")
    thought = "First, 3 + 4 = 7.\n\nThen 7 * 2 = 14, which I double-check: 14 / 2 = 7."
    solution = "The answer is $\\boxed{14}$."
    sky = f"<|begin_of_thought|>\n{thought}\n<|end_of_thought|>\n<|begin_of_solution|>\n{solution}\n<|end_of_solution|>"
    rows = fill_token_counts([
        parse_fields({"response": sky}),
        parse_fields({"response": f"<think>{thought}</think>{solution}", "output_tokens": 999}),
        {"response": None},
    ], counter)
    whole, think, empty = rows
    assert whole["output_tokens"] == counter.count([sky])[0]
    assert whole["thought_tokens"] == counter.count([whole["thought"]])[0] > 0
    assert whole["solution_tokens"] == counter.count([whole["solution"]])[0] > 0
    assert whole["thought_tokens"] + whole["solution_tokens"] < whole["output_tokens"]  # markers are outside both
    assert think["output_tokens"] == 999 and think["thought_tokens"] == counter.count([thought])[0]
    assert (empty["output_tokens"], empty["thought_tokens"], empty["solution_tokens"]) == (0, 0, 0)
