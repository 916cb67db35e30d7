"""Held-out measures: structure_rate's definition, heldout_nll as training computes its loss, paired bootstrap
CIs, the held-out split, and the refusal to score problems a student trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longcot import records
from longcot.errors import ConfigError
from longcot.eval.heldout import (
    bootstrap_ci,
    paired_nll_difference,
    paired_rate_difference,
    per_token,
    trace_examples,
    trace_nlls,
)
from longcot.eval.metrics import HELDOUT, compare_to_baseline, score_variants
from longcot.eval.structure import has_structure, opens_thought, reflection_moves, thought_of
from longcot.models import DEFAULT_MODEL
from longcot.problems import benchmarks
from longcot.recordfiles import write_records
from longcot.train.card import StudentCard, load_card, problem_hash
from longcot.train.config import DataSettings
from longcot.train.examples import split_heldout
from conftest import MATH_TRACES

STUDENT_LIKE = ("<|begin_of_thought|>\n\nSo I have this problem. First, 2 + 3 = 5.\n\nWait, let me double-check: "
                "5 - 3 = 2, yes.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n\\boxed{5}\n\n<|end_of_solution|>")
BASE_LIKE = "To solve this problem, we add 2 and 3. Let me check: 2 + 3 = 5. Wait, that is right. The answer is 5."


def test_structure_needs_the_teachers_opening_marker_and_a_reflection_inside_the_thought():
    assert has_structure(STUDENT_LIKE, "sky") and reflection_moves(thought_of(STUDENT_LIKE, "sky")) == [
        "wait", "let me double-check"]
    assert not has_structure(BASE_LIKE, "sky")  # reflects, but never opens a thought
    assert not has_structure("<|begin_of_thought|>\n\nSo 2 + 3 = 5.\n\n<|end_of_thought|> Wait.", "sky")
    assert not has_structure(STUDENT_LIKE, "think")  # the other convention's marker
    assert has_structure("  <think>Hmm, 2 + 3 is 5.</think> 5", "think") and opens_thought("\n<think>", "think")
    assert not has_structure("<think>The waiter came.</think>", "think")  # whole words only
    with pytest.raises(ValueError, match="unknown marker"):
        opens_thought("x", "xml")


def _card(trained: list[str]) -> StudentCard:
    return StudentCard(base_model=DEFAULT_MODEL, mode="lora", prompt={"system_prompt": None, "instruction": None},
                       markers="sky", cutoff_len=512, trained_problems=[problem_hash(p) for p in trained])


def test_heldout_nll_is_the_training_loss_on_the_same_tokens():
    """The per-trace NLL is the loss the Trainer minimises (labels masked as in training), summed."""
    import torch

    from longcot.models import load_causal_lm, load_tokenizer

    rows = [json.loads(line) for _, line in zip(range(2), MATH_TRACES.open())]
    recs = [{**records.for_sample(records.new_problem(r["problem"], source="t", reference_answer=r["reference_answer"]), 0),
             "response": r["response"]} for r in rows]
    tokenizer = load_tokenizer(DEFAULT_MODEL, padding_side="right")
    examples, skipped = trace_examples(recs + [{**recs[0], "id": "x", "response": None}],
                                       DataSettings(cutoff_len=256), tokenizer)
    assert [e.id for e in examples] == [r["id"] for r in recs] and skipped == [("x", "no response text to train on")]
    model = load_causal_lm(DEFAULT_MODEL)
    scores = trace_nlls(model, examples)
    for ex, (tokens, nll) in zip(examples, scores):
        with torch.inference_mode():
            loss = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss
        assert tokens == sum(1 for x in ex.labels[1:] if x != -100) and len(ex.input_ids) == 256
        assert nll / tokens == pytest.approx(float(loss), rel=1e-4)
    assert per_token(scores) == pytest.approx(sum(n for _, n in scores) / sum(t for t, _ in scores))


def test_paired_differences_and_their_intervals():
    base = [(100, 120.0), (80, 100.0), (120, 130.0), (90, 95.0)]
    better = [(t, n * 0.8) for t, n in base]
    diff, ci = paired_nll_difference(better, base, resamples=500)
    assert diff == pytest.approx(0.8 * per_token(base) - per_token(base)) and ci[1] < 0 and ci[0] <= diff <= ci[1]
    same, ci_same = paired_nll_difference(base, base, resamples=500)
    assert same == 0 and ci_same == [0.0, 0.0]
    rate, rate_ci = paired_rate_difference([1, 1, 1, 0], [0, 0, 0, 0], resamples=500)
    assert rate == 0.75 and rate_ci[0] > 0
    assert bootstrap_ci(lambda i: 0.0, 1) is None  # one item cannot be resampled
    with pytest.raises(ValueError, match="same traces"):
        paired_nll_difference(base, base[:3])


def test_scores_carry_structure_and_the_baseline_comparison():
    def sample(variant: str, pid: str, text: str) -> dict:
        meta = json.dumps({"eval_set": HELDOUT})
        return {"id": f"{variant}{pid}", "problem_id": pid, "source": "benchmark:math500", "metadata": meta,
                "response": text, "verdict": "incorrect", "correct": False, "output_tokens": 10}

    scored = {"base": [sample("b", p, BASE_LIKE) for p in "abcd"],
              "student": [sample("s", p, STUDENT_LIKE if p != "d" else BASE_LIKE) for p in "abcd"]}
    scores = score_variants(scored, markers="sky")
    assert [(s.variant, s.benchmark) for s in scores] == [("base", HELDOUT), ("student", HELDOUT)]
    nlls = {"base": [(10, 12.0), (10, 11.0), (10, 13.0), (10, 12.0)],
            "student": [(10, 9.0), (10, 8.5), (10, 10.0), (10, 9.5)]}
    compare_to_baseline(scores, scored, nlls, "base", markers="sky", resamples=500)
    base, student = scores
    assert base.structure_rate == 0 and student.structure_rate == 0.75 and base.heldout_nll == pytest.approx(1.2)
    assert student.baseline == "base" and student.structure_rate_delta == 0.75
    assert student.heldout_nll_delta == pytest.approx(0.925 - 1.2) and student.heldout_nll_delta_ci[1] < 0
    assert student.heldout_nll_relative == pytest.approx((0.925 - 1.2) / 1.2) and base.baseline is None


def test_heldout_split_is_by_problem_and_ignores_order():
    rows = []
    for i in range(10):
        problem = records.new_problem(f"Problem {i}?", source="t", reference_answer="1")
        for k in range(2):
            rows.append({**records.for_sample(problem, k), "response": "x", "verdict": "correct", "correct": True})
    rows.append({**records.for_sample(records.new_problem("Wrong?", source="t"), 0), "response": "x",
                 "verdict": "incorrect", "correct": False})
    data = DataSettings()
    train, held = split_heldout(rows, 3, 0, data)
    assert len(held) == 6 and len({r["problem_id"] for r in held}) == 3 and len(train) == len(rows) - 6
    assert not {r["problem_id"] for r in held} & {r["problem_id"] for r in train}
    assert all(r["correct"] for r in held)  # chosen among problems with a trainable record
    _, again = split_heldout(list(reversed(rows)), 3, 0, data)
    assert {r["id"] for r in again} == {r["id"] for r in held}
    _, other_seed = split_heldout(rows, 3, 1, data)
    assert {r["id"] for r in other_seed} != {r["id"] for r in held}


@pytest.fixture()
def untrained_student(tmp_path) -> Path:
    """A real PEFT LoRA adapter (freshly initialised, so it changes nothing) with a card that says it trained
    on the first GSM8K problem."""
    from peft import LoraConfig, get_peft_model

    from longcot.models import load_causal_lm

    adapter = tmp_path / "adapter"
    model = get_peft_model(load_causal_lm(DEFAULT_MODEL, dtype="float32"), LoraConfig(r=4, target_modules="all-linear",
                                                                      task_type="CAUSAL_LM"))
    model.save_pretrained(adapter)
    gsm8k = next(benchmarks.iter_problems(benchmarks.load_registry()["gsm8k"], 1))
    _card([gsm8k["problem"]]).save(adapter)
    return adapter


def test_eval_refuses_problems_the_student_trained_on_by_id(ray_local, untrained_student, tmp_path):
    from longcot.eval.config import EvalConfig
    from longcot.pipeline import run_single_stage

    config = EvalConfig.model_validate({
        "benchmarks": ["gsm8k"], "limit": 2,
        "models": [{"name": "base"}, {"name": "student", "adapter": str(untrained_student)}]})
    gsm8k = next(benchmarks.iter_problems(benchmarks.load_registry()["gsm8k"], 1))
    with pytest.raises(ConfigError, match=f"1 problem.* trained on .*{gsm8k['id']}"):
        run_single_stage("eval", config, input_path=None, output=str(tmp_path / "e" / "records.jsonl"),
                         runs_dir=str(tmp_path / "runs"), progress=False)
    assert not (tmp_path / "e" / "base").exists()  # refused before any model generated


@pytest.mark.slow
def test_an_untrained_adapter_moves_no_heldout_measure(ray_local, untrained_student, tmp_path):
    """The held-out measures on real models: a student whose adapter learned nothing scores as the base, so
    a test that asks for a lower NLL or more structure would fail on it."""
    from longcot.eval.config import EvalConfig
    from longcot.pipeline import run_single_stage

    traces = [json.loads(line) for _, line in zip(range(3), MATH_TRACES.open())]
    held = [{**records.for_sample(records.new_problem(t["problem"], source="benchmark:math500",
                                                      reference_answer=t["reference_answer"]), 0),
             "response": t["response"], "verdict": "correct", "correct": True} for t in traces]
    write_records(tmp_path / "held.jsonl", held)
    config = EvalConfig.model_validate({
        "benchmarks": [], "heldout": {"records": str(tmp_path / "held.jsonl"), "cutoff_len": 192, "resamples": 200},
        "models": [{"name": "base"}, {"name": "student", "adapter": str(untrained_student)}],
        "generate": {"batch_size": 3, "sampling": {"max_tokens": 8}}, "k": [1]})
    _, result = run_single_stage("eval", config, input_path=None, output=str(tmp_path / "e" / "records.jsonl"),
                                 runs_dir=str(tmp_path / "runs"), progress=False)
    data = json.loads(Path(result.artifacts["eval_results"]).read_text())
    base, student = ({(s["variant"], s["benchmark"]): s for s in data["scores"]}[(v, HELDOUT)]
                     for v in ("base", "student"))
    assert base["problems"] == student["problems"] == 3 and base["heldout_traces"] == 3
    assert student["heldout_nll"] == pytest.approx(base["heldout_nll"], abs=1e-4)
    assert abs(student["heldout_nll_delta"]) < 1e-4 and student["structure_rate"] == base["structure_rate"] == 0
    assert data["manifest"]["prompt"]["source"] == "student card" and data["manifest"]["structure_markers"] == "sky"
    assert load_card(untrained_student).trained_problems  # the card travelled with the adapter
    report = (tmp_path / "e" / "report.md").read_text()
    assert "## Held-out measures" in report and "| student | heldout |" in report
