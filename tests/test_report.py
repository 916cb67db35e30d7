"""The run report and trace inspector: static pages built from a run directory's own files."""

from __future__ import annotations

import json

from longcot import records
from longcot.recordfiles import write_records
from longcot.report.collect import collect, reason_key
from longcot.report.render import build_report, inspector_entry, word_diff
from longcot.rundir import RunDir
from longcot.traces import parse_trace


def test_reasons_group_without_locations_ids_or_numbers():
    assert reason_key("problems: data.jsonl:12: malformed JSON: x at column 3") == "malformed JSON: x at column N"
    assert reason_key("problems: duplicate problem (id 9f8e7d6c) from file:x") == "duplicate problem  from file:x"


def test_word_diff_reconstructs_both_sides():
    before, after = "We have 12 apples.\n\nWait, check.", "We have 7 apples.\n\ncheck."
    ops = word_diff(before, after)
    assert "".join(t for op, t in ops if op != "+") == before
    assert "".join(t for op, t in ops if op != "-") == after
    assert ["-", "12"] in ops and ["+", "7"] in ops


def _segmented_record():
    response = "<|begin_of_thought|>Restate.\n\nTry A: 3.\n\nTry B: 5.\n\nCheck: 5.<|end_of_thought|>" \
               "<|begin_of_solution|>\\boxed{5}<|end_of_solution|>"
    thought = parse_trace(response).thought
    spans = [(k, thought.index(t), thought.index(t) + len(t)) for k, t in
             [("restatement", "Restate."), ("exploration", "Try A: 3."), ("exploration", "Try B: 5."),
              ("verification", "Check: 5.")]]
    segments = [
        {"kind": k, "start": a, "end": b, "approach": i if k == "exploration" else None, "cluster": None,
         "label": {1: "incorrect", 2: "correct"}.get(i) if k == "exploration" else None,
         "kept": i != 1, "reason": "failed approach" if i == 1 else None}
        for i, (k, a, b) in enumerate(spans)
    ]
    row = records.new_problem("p", source="test", reference_answer="5")
    return records.conform(row | {"response": response, "segments": segments, "verdict": "correct"})


def test_inspector_entry_carries_the_original_thought_and_its_segments():
    row = _segmented_record()
    entry = inspector_entry(row)
    assert entry["thought"].startswith("Restate.") and entry["diff"] is None
    for seg in entry["segments"]:
        assert entry["thought"][seg["start"]:seg["end"]].strip()


def test_a_run_directory_becomes_a_self_contained_report(tmp_path):
    run = RunDir(tmp_path / "run")
    rows = [_segmented_record()]
    write_records(run.stage_dir("dlcot") / "records.jsonl", rows)
    (run.stage_dir("dlcot") / "rejected.jsonl").write_text(
        json.dumps({"stage": "dlcot", "reason": "dlcot: no markers", "record": {}}) + "\n")
    run.record_stage("dlcot", {"records_in": 3, "records_out": 2, "records_rejected": 1,
                               "output": str(run.path / "dlcot" / "records.jsonl"),
                               "summary": {"skip_reasons": {"no_markers": 1, "truncated": 1},
                                           "passed_on": {"truncated": 1}}})
    data = collect(run.path)
    assert [(s.stage, s.records_out) for s in data.funnel] == [("dlcot", 2)]
    # each skip once: the rejected one from the rejected file, the one passed on from the summary
    assert data.funnel[0].reasons == [("no markers", 1), ("skipped, passed on unchanged: truncated", 1)]
    report, inspector = build_report(run.path)
    page = report.read_text()
    assert 'data-stage="dlcot"' in page and "no markers" in page
    # self-contained: nothing is fetched from anywhere
    for text in (page, inspector.read_text()):
        assert "http://" not in text and "https://" not in text and "<link" not in text
