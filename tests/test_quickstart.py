"""`longcot run jobs/quickstart.yaml`, as a user runs it: a real teacher's traces distilled into the embedded
135M student, every stage on the same MATH-500 problems, and held-out measures that move only if it learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longcot import records
from longcot.eval.metrics import HELDOUT
from longcot.recordfiles import read_records
from longcot.train.card import load_card, problem_hash
from conftest import MATH_TRACES

# the first test here runs the whole quickstart in its setup (10.5 min on a quiet 2-core machine,
# longer when the cores are shared): more room than the suite-wide 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _records(path: str) -> list[dict]:
    return [r for r in read_records(path) if isinstance(r, dict)]


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _scores(run: Path) -> dict[str, dict]:
    data = json.loads((run / "eval" / "results.json").read_text())
    return {s["variant"]: s for s in data["scores"] if s["benchmark"] == HELDOUT}


def test_one_story_from_the_recorded_teacher_to_the_served_student(quickstart_run: Path):
    manifest = _manifest(quickstart_run)
    assert manifest["status"] == "finished"
    assert set(manifest["stages"]) == {"problems", "generate", "verify", "dlcot", "train", "eval", "serve"}
    assert manifest["versions"]["ray"].startswith("2.60") and manifest["versions"]["torch"].startswith("2.13")
    stages = manifest["stages"]
    for stage in ("problems", "verify", "dlcot"):
        entry = stages[stage]
        assert entry["records_in"] == entry["records_out"] + entry["records_rejected"], stage

    # the teacher: the recorded Sky-T1 model answered all 500 MATH-500 problems with its real traces
    assert stages["problems"]["records_out"] == 500
    samples = _records(stages["generate"]["output"])
    recorded = {records.problem_key(json.loads(line)["problem"]): json.loads(line)["response"]
                for line in MATH_TRACES.open()}
    assert len(samples) == 500 and all(s["response"] == recorded[records.problem_key(s["problem"])] for s in samples)
    assert stages["generate"]["summary"]["backend"]["backend"] == "recorded"

    # rejection sampling: every verdict counted, only the correct ones go on
    verdicts = stages["verify"]["summary"]["verdicts"]
    assert sum(verdicts.values()) == 500 and verdicts["correct"] > 250
    kept = _records(stages["verify"]["output"])
    assert kept and all(r["verdict"] == "correct" for r in kept)

    # DLCoT simplifies the teacher's own verified answers (not a separate file)
    assert stages["dlcot"]["records_in"] == stages["verify"]["records_out"]
    simplified = _records(stages["dlcot"]["output"])
    assert len(simplified) > 100 and all(r["segments"] and r["tokens_after"] <= r["tokens_before"] for r in simplified)

    # training: held-out problems set aside, whole traces only (none cut at the cutoff)
    train = stages["train"]["summary"]
    assert train["heldout_problems"] == 16 and train["examples"] >= 25 and train["truncated_share"] <= 0.10
    assert stages["train"]["records_in"] == train["examples"] + stages["train"]["records_rejected"] + train["held_out"]
    held = _records(stages["train"]["artifacts"]["heldout_records"])
    card = load_card(stages["train"]["artifacts"]["student_adapter"])
    assert card is not None and card.markers == "sky" and len(card.trained_problems) == train["examples"]
    assert not {problem_hash(r["problem"]) for r in held} & set(card.trained_problems)

    # the served student answered a held-out problem through the openai client, its thought apart
    serve = stages["serve"]["summary"]
    assert serve["mode"] == "smoke_test" and serve["problem_id"] in {r["problem_id"] for r in held}
    assert serve["reasoning_content"] and serve["completion_tokens"] > 0
    assert serve["stream"]["reasoning_content"] == serve["reasoning_content"] and serve["stream"]["chunks"] > 1

    page = (quickstart_run / "report.html").read_text()
    for section in ("id=\"verdicts\"", "id=\"train\"", "id=\"evaluation\"", "id=\"serve\""):
        assert section in page, section


def test_the_student_learned_from_the_teacher(quickstart_run: Path):
    """The two held-out effects distillation must have, on problems the student never saw. Each fails when
    the effect is absent: an adapter not applied at eval scores as the base (test_eval_heldout shows it), and
    with every label masked nothing is learned."""
    scores = _scores(quickstart_run)
    base, student = scores["base"], scores["student"]
    assert base["problems"] == student["problems"] == 16 and student["heldout_traces"] == 16

    # 1. the student predicts the teacher's held-out traces better: >= 5% lower NLL, the paired CI below zero
    assert student["heldout_nll"] <= 0.95 * base["heldout_nll"]
    assert student["heldout_nll_delta_ci"][1] < 0

    # 2. the student writes in the teacher's structure; the base model never does
    assert base["thought_rate"] == 0 and base["structure_rate"] == 0
    assert student["thought_rate"] >= 0.5 and student["thought_rate"] >= base["thought_rate"] + 0.3
    assert student["structure_rate"] > base["structure_rate"]
