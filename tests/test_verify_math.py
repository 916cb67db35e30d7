"""Math answers: extraction from real response shapes, math-verify equivalence, the timeout-safe pool,
and verdicts on the 500 real math traces against their original grades."""

from __future__ import annotations

import json
import time

import pytest

from conftest import MATH_TRACES
from longcot.records import for_sample, new_problem
from longcot.verify import VerifyConfig, match_answers, verify_records
from longcot.verify.math import answers_match, final_answer, normalize_answer
from longcot.traces import last_boxed, parse_trace
from longcot.verify.pool import CheckPool, wall_backstop

# Every disagreement with the traces' `original_correct`, classified by reading the response (see
# bench/RESULTS.md). Keys: idx. A new disagreement fails test_verdicts_on_the_500_math_traces.
ORIGINAL_GRADER_WRONG = {
    # the original kept words glued to the number, so a right answer failed to compare
    113: "glued", 122: "glued", 207: "glued", 276: "glued", 278: "glued", 447: "glued", 455: "glued",
    # the original took one number out of a compound final answer (tuple, fraction, multiple of pi, ...)
    28: "piece", 73: "piece", 144: "piece", 179: "piece", 218: "piece", 279: "piece", 313: "piece",
    338: "piece", 360: "piece", 376: "piece", 393: "piece", 416: "piece", 492: "piece",
    # the original took a number that is not the stated answer (of a closing check, of the options, ...)
    212: "last-number", 262: "last-number", 399: "last-number", 398: "last-number", 227: "last-number",
    # the original's answer was right but not recognised as equal (the two roots against 3 +- 2 sqrt 2)
    284: "equivalent",
}
TRUNCATED_NO_ANSWER = {57, 88, 158, 195, 332, 355, 476, 485}  # cut off mid-reasoning: original's last number matched


@pytest.fixture(scope="module")
def pool():
    with CheckPool(workers=2, timeout_s=5.0) as checker:
        yield checker


def _answer(text: str, finish_reason: str | None = None) -> str | None:
    return final_answer(parse_trace(text, finish_reason)).text


def test_last_boxed_balances_braces_and_takes_the_last():
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed 5 apples") == "5"
    assert last_boxed("no box here") is None


def test_final_answer_prefers_the_solution_over_the_thought():
    text = ("<|begin_of_thought|>maybe \\boxed{3}<|end_of_thought|><|begin_of_solution|>"
            "So the answer is \\boxed{4}.<|end_of_solution|>")
    assert _answer(text) == "4"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Therefore, the number of divisors of 196 is 9.", "9"),
        ("I think I'm good. The height is 5 cm.", "5"),
        ("Everything checks out. Profit: $93 - $15 = $78.\n\nI think that's the right answer.", "78"),
        ("Therefore, the number of trailing zeros in 42! is 9.\n\nI think that's the answer.", "9"),
        ("So, \\(x = 4\\) is indeed the correct solution.\n\nNote that 10 to the power of 4 is 10000.", "4"),
        ("I think I'm confident. 326.5 is the correct sum of 313.9 and 12.6.", "326.5"),
        ("So, the equation y = -2x correctly describes this line.\n\nI think that's the final answer.", "-2x"),
        ("The midpoint is (-1,6).", "(-1,6)"),
        ("Thus, the plane is:\n\\[\n5x - 7y + 11z + 4 = 0\n\\]", "5x - 7y + 11z + 4 = 0"),
        ("So, final answer: 12π inches per second.", "12π"),
        ("Therefore, I'm confident that the answer is three boxes contain neither pens nor pencils.", "3"),
        ("So the base six equivalent of 999 is 4343_6.", "4343_6"),
        ("Therefore, the numbers are x = 2 and x = -2.", "2, -2"),
        ("**Final Answer**\n\n\\[ \\boxed{\\text{Evelyn}} \\]", "\\text{Evelyn}"),
    ],
)
def test_final_answer_of_a_finished_response_without_markers(text, expected):
    assert _answer(text) == expected


def test_an_unfinished_thought_answers_only_with_boxed():
    cut = "<|begin_of_thought|>\n\nSo the answer is 16.\n\nBut earlier methods gave me 16, so"
    assert _answer(cut) is None
    assert _answer("<|begin_of_thought|>\n\n**Final Answer**\n\n\\[ \\boxed{-\\dfrac{35}{9}} \\] \n<") == "-\\dfrac{35}{9}"
    assert _answer("The total is 24 +") is None  # no markers, cut off mid-sentence
    assert _answer("The total is 24.", finish_reason="length") is None


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("0.5", "\\frac12"),
        ("5", "x=5"),
        ("5,850", "5850"),
        ("\\dfrac{3}{4}", "\\frac 34"),
        ("7π", "7\\pi"),
        ("$78", "78"),
        ("3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}", "3 \\pm 2 \\sqrt{2}"),
        ("Navin earns the most", "\\text{Navin}"),
    ],
)
def test_equivalent_answers_match(predicted, reference):
    assert answers_match(predicted, reference)


@pytest.mark.parametrize("predicted, reference", [("5,850", "58,500"), ("definitely8000", "8000"), ("2", "-2")])
def test_different_answers_do_not_match(predicted, reference):
    assert not answers_match(predicted, reference)


def test_normalize_answer_reads_thousands_separators_as_one_number():
    assert normalize_answer("$5,850$") == "5850"
    assert normalize_answer("1, 2") == "1, 2"


def test_pathological_answers_time_out_within_a_bound_and_the_pool_recovers(pool):
    huge = "+".join(["7"] * 250_000)  # a 0.5 MB expression
    assert match_answers([("1/2", "0.5")], pool=pool) == [True]  # workers started and warm
    started = time.monotonic()
    [outcome] = pool.run("math", [("10^{10^{10^{10}}}", "5")], timeout_s=2.0)
    # stopped once the check has used its 2 s of CPU (on a loaded machine that takes longer on the clock)
    assert outcome.status == "timeout" and 2.0 <= outcome.cpu_seconds < 3.5
    assert time.monotonic() - started < wall_backstop(2.0)
    restarts = pool.restarts
    assert match_answers([(huge, "1"), ("2", "2.0"), ("\\frac{1}{3}", "0.3333")], timeout_s=2.0, pool=pool) == [
        None, True, False]  # None: timed out, neither True nor False; the other pairs are checked as usual
    assert pool.restarts == restarts + 1


def test_pathological_answer_gives_verdict_timeout(pool):
    row = for_sample(new_problem("What is it?", source="test", reference_answer="5"), 0)
    row["response"] = "The answer is \\boxed{10^{10^{10^{10}}}}."
    [checked] = verify_records([row], VerifyConfig(timeout_s=1.5), pool=pool)
    assert checked["verdict"] == "timeout" and checked["correct"] is False
    assert "CPU time" in checked["error"]


def test_a_failing_check_is_an_error_outcome_not_a_dead_pool(pool):
    restarts = pool.restarts
    outcomes = pool.run("math", [42, ("1", "1.0")])  # 42 is not a (predicted, reference) pair
    assert outcomes[0].status == "error" and "TypeError" in outcomes[0].error
    assert outcomes[1].status == "ok" and outcomes[1].value is True
    assert pool.restarts == restarts


def test_a_pool_left_open_when_its_process_exits_prints_nothing():
    """A pool nobody closed (a Ray actor's, when the actor ends): its workers find the pipe closed when they
    report ready, and end without a BrokenPipeError traceback in the job's log."""
    import subprocess
    import sys

    code = "from longcot.verify.pool import CheckPool; CheckPool(2, 5.0)"
    # stderr is read to its end, so the workers' output (they inherit it) is in it too
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_verdicts_on_the_500_math_traces(pool):
    traces = [json.loads(line) for line in MATH_TRACES.read_text().splitlines() if line.strip()]
    rows = []
    for trace in traces:
        row = for_sample(new_problem(trace["problem"], source="traces:math500",
                                     reference_answer=trace["reference_answer"]), 0)
        row["response"] = trace["response"]
        rows.append(row)
    checked = verify_records(rows, VerifyConfig(), pool=pool)
    assert all(r["verdict"] in ("correct", "incorrect", "no_answer") for r in checked)
    disagree = {t["idx"]: r["verdict"] for t, r in zip(traces, checked) if r["correct"] != t["original_correct"]}
    agreement = 1 - len(disagree) / len(traces)
    assert agreement >= 0.93
    assert {i for i, v in disagree.items() if v == "correct"} == set(ORIGINAL_GRADER_WRONG)
    assert {i for i, v in disagree.items() if v != "correct"} == TRUNCATED_NO_ANSWER
    assert all(disagree[i] == "no_answer" for i in TRUNCATED_NO_ANSWER)
    lineage = json.loads(checked[0]["lineage"][-1]["detail"])
    assert lineage["verdict"] == checked[0]["verdict"] and checked[0]["lineage"][-1]["stage"] == "verify"


def test_extraction_is_linear_on_hostile_responses():
    hostile = ["\\boxed{" * 100_000, "(" * 300_000 + ".", "$1 " * 300_000 + ".", "word " * 200_000 + "The answer is 5."]
    started = time.monotonic()
    answers = [final_answer(parse_trace(text)).text for text in hostile]
    assert answers[0] is None and answers[3] == "5"
    assert time.monotonic() - started < 30  # about a second each on an idle core; quadratic would be hours
