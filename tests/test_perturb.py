"""Perturbations change what they should at the requested ratio, nothing else, reproducibly per seed.

Most checks run on the 530 real Sky-T1 traces in ``jobs/data/traces`` (messy: no markers, truncated,
one-step thoughts), with the pure functions; the last tests run the stage through the CLI on local Ray.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import AIME_TRACES, MATH_TRACES
from longcot import records
from longcot.errors import RejectRow
from longcot.perturb.config import REFLECTION_KEYWORDS, PerturbConfig, PerturbLineage
from longcot.perturb.content import NUMBER, Edit, apply_edits, keyword_pattern, remove_keywords, undo_edits
from longcot.perturb.perturbation import Donors, perturb_record
from longcot.perturb.structure import StepLayout, step_count
from longcot.recordfiles import load_records, write_records
from longcot.verify.math import answers_match
from longcot.traces import last_boxed, parse_trace


def trace_records(path) -> list[dict]:
    """The shared trace files as longcot records, with verify's verdict taken from the original evaluation."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        trace = json.loads(line)
        problem = records.new_problem(
            trace["problem"], source=f"file:{path.name}", reference_answer=trace["reference_answer"]
        )
        row = records.for_sample(problem, 0)
        correct = bool(trace["original_correct"])
        row |= {"response": trace["response"], "verdict": "correct" if correct else "incorrect", "correct": correct}
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return trace_records(MATH_TRACES) + trace_records(AIME_TRACES)


@pytest.fixture(scope="module")
def sample(traces) -> list[dict]:
    """Every third trace (177, ~14k steps, all four conventions): enough to pin a ratio to +-0.02."""
    return traces[::3]


def run_all(rows, config, donors=None):
    """Perturb every row; returns (outputs, rejected reasons) like the stage would split them."""
    donors = donors if donors is not None else Donors.from_records(rows, config)
    out, rejected = [], Counter()
    for row in rows:
        try:
            out.append((row, perturb_record(row, config, donors)))
        except RejectRow as exc:
            rejected[exc.reason] += 1
    return out, rejected


def detail(row) -> PerturbLineage:
    return records.lineage_detail(row, PerturbLineage)


def outside_thought(response: str) -> tuple[str, str]:
    parsed = parse_trace(response)
    return response[: parsed.thought_start], response[parsed.thought_end :]


# ---------------------------------------------------------------- step layout


def test_step_layout_renders_every_real_thought_byte_identical(traces):
    for row in traces:
        thought = parse_trace(row["response"]).thought
        layout = StepLayout.of(thought)
        assert layout.render() == thought
        assert len(layout.gaps) == max(0, len(layout.steps) - 1)


def test_step_count_is_unbiased_for_small_thoughts():
    import random

    rng = random.Random(0)
    counts = [step_count(0.67, 3, rng) for _ in range(20000)]
    assert set(counts) <= {2, 3}
    assert sum(counts) / len(counts) == pytest.approx(0.67 * 3, abs=0.02)
    assert step_count(1.0, 7, rng) == 7 and step_count(0.0, 7, rng) == 0


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("ratio", [0.67, 1.0])
def test_shuffle_moves_the_requested_share_of_steps_and_nothing_else(sample, ratio):
    config = PerturbConfig(kind="shuffle_steps", ratio=ratio, seed=3)
    results, rejected = run_all(sample, config)
    assert set(rejected) <= {"the thought has 1 step: too few to shuffle", "the thought has 0 steps: too few to shuffle"}
    moved = total = 0
    for before, after in results:
        assert after["id"] == before["id"] and after["original_response"] == before["response"]
        assert outside_thought(after["response"]) == outside_thought(before["response"])  # markers + solution
        old = StepLayout.of(parse_trace(before["response"]).thought)
        new = StepLayout.of(parse_trace(after["response"]).thought)
        assert (new.prefix, new.gaps, new.suffix) == (old.prefix, old.gaps, old.suffix)
        assert sorted(new.steps) == sorted(old.steps)
        d = detail(after)
        picked = {src for src, _ in d.moved}
        for i, (a, b) in enumerate(zip(old.steps, new.steps)):
            if i not in picked:
                assert a == b
        for src, dst in d.moved:
            assert src != dst and new.steps[dst] == old.steps[src]
        moved += d.affected
        total += d.steps
    assert moved / total == pytest.approx(ratio, abs=0.02)


@pytest.mark.parametrize("ratio", [0.33, 1.0])
def test_delete_removes_the_requested_share_and_keeps_the_rest_in_order(sample, ratio):
    config = PerturbConfig(kind="delete_steps", ratio=ratio, seed=5)
    results, rejected = run_all(sample, config)
    assert not rejected
    deleted = total = 0
    for before, after in results:
        assert outside_thought(after["response"]) == outside_thought(before["response"])
        old = StepLayout.of(parse_trace(before["response"]).thought).steps
        new_thought = parse_trace(after["response"]).thought
        d = detail(after)
        kept = [s for i, s in enumerate(old) if i not in set(d.deleted)]
        assert StepLayout.of(new_thought).steps == kept or (not kept and not new_thought.strip())
        deleted += len(d.deleted)
        total += d.steps
    assert deleted / total == pytest.approx(ratio, abs=0.02)
    if ratio == 1.0:
        assert all(not parse_trace(after["response"]).thought.strip() for _, after in results)


def test_insert_adds_steps_of_other_records_between_the_untouched_original_steps(traces, sample):
    config = PerturbConfig(kind="insert_steps", ratio=0.67, seed=7)
    donors = Donors.from_records(traces, config)
    by_id = {r["id"]: StepLayout.of(parse_trace(r["response"]).thought).steps for r in traces}
    results, rejected = run_all(sample, config, donors)
    assert not rejected
    inserted = total = 0
    for before, after in results:
        assert outside_thought(after["response"]) == outside_thought(before["response"])
        new = StepLayout.of(parse_trace(after["response"]).thought).steps
        d = detail(after)
        positions = {pos for pos, _, _ in d.inserted}
        for pos, donor_id, donor_step in d.inserted:
            assert donor_id != before["id"]
            assert new[pos] == by_id[donor_id][donor_step]
        assert [s for i, s in enumerate(new) if i not in positions] == by_id[before["id"]]
        inserted += d.affected
        total += d.steps
    assert inserted / total == pytest.approx(0.67, abs=0.02)


def test_step_perturbations_reject_what_they_cannot_do():
    row = records.for_sample(records.new_problem("p", source="t"), 0)
    one_step = row | {"response": "<think>only one step</think>The answer is \\boxed{1}."}
    with pytest.raises(RejectRow, match="too few to shuffle"):
        perturb_record(one_step, PerturbConfig(kind="shuffle_steps"))
    with pytest.raises(RejectRow, match="no response"):
        perturb_record(row, PerturbConfig(kind="delete_steps"))
    with pytest.raises(RejectRow, match="other records"):
        insert = PerturbConfig(kind="insert_steps")
        perturb_record(one_step, insert, Donors.from_records([one_step], insert))
    empty_thought = row | {"response": "<think>\n\n</think>answer 3"}
    with pytest.raises(RejectRow, match="no steps"):
        perturb_record(empty_thought, PerturbConfig(kind="delete_steps"))


# ---------------------------------------------------------------- content


@pytest.mark.parametrize("ratio", [0.2, 1.0])
def test_corrupt_digits_replaces_the_requested_share_of_numbers_and_nothing_else(traces, ratio):
    config = PerturbConfig(kind="corrupt_digits", ratio=ratio, seed=11)
    results, rejected = run_all(traces[::5], config)
    assert not rejected
    changed = seen = 0
    for before, after in results:
        d = detail(after)
        edits = [Edit(*e) for e in d.edits]
        assert undo_edits(after["response"], edits) == before["response"]
        for e in edits:
            assert NUMBER.fullmatch(e.old) and e.new.isdigit() and 0 <= int(e.new) <= 9
            assert float(e.new) != float(e.old)
        changed += d.affected
        seen += d.numbers
    assert changed / seen == pytest.approx(ratio, abs=0.01)


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_remove_keywords_removes_the_requested_share_of_occurrences(traces, ratio):
    config = PerturbConfig(kind="remove_keywords", ratio=ratio, seed=13)
    results, rejected = run_all(traces, config)
    assert not rejected
    pattern = keyword_pattern(REFLECTION_KEYWORDS)
    removed = seen = 0
    for before, after in results:
        d = detail(after)
        edits = [Edit(*e) for e in d.edits]
        assert undo_edits(after["response"], edits) == before["response"]
        for e in edits:
            assert e.new == "" and pattern.fullmatch(e.old)
        removed += d.affected
        seen += d.occurrences
    assert seen > 5000  # the real traces are full of "Wait" and "Alternatively"
    assert removed / seen == pytest.approx(ratio, abs=0.02)
    if ratio == 1.0:
        assert all(not pattern.search(after["response"]) for _, after in results)


def test_keywords_match_whole_words_with_their_punctuation():
    import random

    text = "But wait, Butter is fine. Wait, so Hmm... Let me check: 2+2. Alternatively x"
    new, edits, seen = remove_keywords(text, 1.0, random.Random(0), REFLECTION_KEYWORDS)
    assert new == "wait, Butter is fine. so 2+2. x"
    assert seen == len(edits) == 5


def test_wrong_answer_keeps_rejected_traces_and_rejects_correct_ones(traces):
    rows = traces[:80]
    results, rejected = run_all(rows, PerturbConfig(kind="wrong_answer"))
    n_incorrect = sum(1 for r in rows if r["verdict"] == "incorrect")
    assert len(results) == n_incorrect
    assert sum(rejected.values()) == len(rows) - n_incorrect
    assert all("verified correct" in reason for reason in rejected)
    for before, after in results:
        assert after["response"] == before["response"] and detail(after).source == "rejected_by_verify"


def test_wrong_answer_replaces_the_final_answer_of_correct_traces(traces):
    rows = [r for r in traces[:40] if r["verdict"] == "correct"]
    config = PerturbConfig(kind="wrong_answer", replace_answers=True, ratio=1.0, seed=2)
    results, rejected = run_all(rows, config)
    assert set(rejected) <= {"no \\boxed{} final answer to replace"}
    assert len(results) > 0.5 * len(rows)
    for before, after in results:
        d = detail(after)
        edits = [Edit(*e) for e in d.edits]
        assert d.source == "answer_replaced" and edits
        assert undo_edits(after["response"], edits) == before["response"]
        new_answer = last_boxed(after["response"])
        assert new_answer == after["predicted_answer"] and after["verdict"] == "incorrect"
        assert not answers_match(new_answer, before["reference_answer"])


def test_no_verdict_is_rejected_for_wrong_answer():
    row = records.for_sample(records.new_problem("p", source="t"), 0) | {"response": "x \\boxed{2}"}
    with pytest.raises(RejectRow, match="run verify"):
        perturb_record(row, PerturbConfig(kind="wrong_answer"))


def test_apply_edits_refuses_an_edit_that_does_not_match():
    with pytest.raises(ValueError):
        apply_edits("abc", [Edit(1, "x", "y")])


# ---------------------------------------------------------------- reproducibility


KINDS = ["corrupt_digits", "remove_keywords", "delete_steps", "insert_steps", "shuffle_steps"]


def strip_time(row):
    return {**row, "lineage": [{**e, "at": None} for e in row["lineage"]]}


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_other_seed_other_output(traces, kind):
    rows = traces[:40]
    config = PerturbConfig(kind=kind, ratio=0.5, seed=21)
    first, _ = run_all(rows, config)
    again, _ = run_all(rows, config)
    assert [strip_time(a) for _, a in first] == [strip_time(a) for _, a in again]
    other, _ = run_all(rows, PerturbConfig(kind=kind, ratio=0.5, seed=22))
    assert [a["response"] for _, a in first] != [a["response"] for _, a in other]
    # a record's output depends on (seed, id), not on the other records of its batch
    donors = Donors.from_records(rows, config)
    alone = perturb_record(rows[7], config, donors)
    assert alone["response"] == first[7][1]["response"]


def test_thought_and_solution_fields_follow_the_new_response(traces):
    row = next(r for r in traces
               if parse_trace(r["response"]).markers == "sky" and len(parse_trace(r["response"]).steps) > 5)
    parsed = parse_trace(row["response"])
    row = row | {"thought": parsed.thought, "solution": parsed.solution, "markers": "sky"}
    out = perturb_record(row, PerturbConfig(kind="shuffle_steps", ratio=1.0))
    assert out["thought"] == parse_trace(out["response"]).thought != row["thought"]
    assert out["solution"] == row["solution"]


# ---------------------------------------------------------------- the stage and the CLI


def run_cli(argv):
    from longcot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_cli_perturbs_a_record_file_on_ray_and_loses_nothing(ray_local, traces, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    write_records(source, traces[:60])
    with source.open("a") as handle:
        handle.write("{not json\n")  # a malformed line goes to the rejected file, naming the line
    output = tmp_path / "out.jsonl"
    code = run_cli(["perturb", "--kind", "shuffle_steps", "--ratio", "0.67", "--seed", "4", "--input", str(source),
                    "--output", str(output), "--runs-dir", str(tmp_path / "runs")])
    assert code in (0, None)
    out = load_records(output)
    rejected = [json.loads(line) for line in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert len(out) + len(rejected) == 61
    assert any(f"{source}:61" in r["reason"] for r in rejected)
    by_id = {r["id"]: r for r in traces[:60]}
    for row in out:
        assert row["original_response"] == by_id[row["id"]]["response"] != row["response"]
    # the stage and the pure function agree record for record
    config = PerturbConfig(kind="shuffle_steps", ratio=0.67, seed=4)
    for row in out[:10]:
        assert perturb_record(by_id[row["id"]], config)["response"] == row["response"]
    printed = capsys.readouterr().out
    assert "achieved ratio" in printed


def test_cli_names_a_bad_kind(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("")
    code = run_cli(["perturb", "--kind", "scramble", "--input", str(source), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert "kind" in err and "scramble" in err
