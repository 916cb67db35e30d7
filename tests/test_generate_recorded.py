"""The recorded teacher: real Sky-T1 traces answer their problems through the generate stage, like any backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longcot import records
from longcot.errors import ConfigError, InputError
from longcot.generate.config import GenerateConfig, RecordedLineage, RecordedSettings
from longcot.generate.recorded import Recording, RecordedTeacher, finish_reason_of
from longcot.generate.samples import expand_samples, fingerprint
from longcot.problems import benchmarks
from longcot.recordfiles import load_records
from conftest import MATH_TRACES


def math500(limit: int) -> list[dict]:
    return list(benchmarks.iter_problems(benchmarks.load_registry()["math500"], limit))


def recorded(path=MATH_TRACES, **extra) -> GenerateConfig:
    return GenerateConfig.model_validate({"backend": "recorded", "model": "sky-t1-27b", "markers": "sky",
                                          "recorded": {"path": str(path)}, "batch_size": 4, **extra})


def test_the_recording_answers_every_math500_problem_by_its_text():
    recording = Recording(RecordedSettings(path=str(MATH_TRACES)))
    assert recording.rows == 500 and recording.unusable == 0
    raw = [json.loads(line) for line in MATH_TRACES.open()]
    for problem in math500(500):
        line, text, finish = recording.response(problem["problem"], 0)
        assert text == raw[line - 1]["response"] and finish is None
    # whitespace does not matter, a sample past the recorded ones is named
    assert recording.response("  " + raw[0]["problem"].replace(" ", "\n "), 0)[1] == raw[0]["response"]
    assert "sample 1 has none" in recording.response(raw[0]["problem"], 1)
    assert "no response to this problem" in recording.response("What is 2 + 2?", 0)


def test_finish_reason_is_read_from_a_column_or_from_the_text(tmp_path):
    assert finish_reason_of("<|begin_of_thought|>\n\nSo I have") == "length"
    assert finish_reason_of("<|begin_of_thought|>a<|end_of_thought|><|begin_of_solution|>b<|end_of_solution|>") == "stop"
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Q1", "answer_text": "<think>x", "why": "stop"},
        {"question": "Q2", "answer_text": "", "why": "stop"},
        "not json",
    ]) + "\nnot json\n")
    settings = RecordedSettings(path=str(path), fields={"problem": "question", "response": "answer_text",
                                                        "finish_reason": "why"})
    recording = Recording(settings)
    assert recording.response("Q1", 0)[2] == "stop" and recording.unusable == 3
    with pytest.raises(InputError, match="no row has both"):
        Recording(RecordedSettings(path=str(path)))


def test_teacher_answers_with_counted_tokens_and_an_error_for_unknown_problems():
    teacher = RecordedTeacher(RecordedSettings(path=str(MATH_TRACES)))
    known = expand_samples(math500(1)[0], 2)
    unknown = expand_samples(records.new_problem("What is 2 + 2?", source="file:x"), 1)
    rows = [{**r, "prompt": json.dumps([{"role": "user", "content": r["problem"]}])} for r in known + unknown]
    (first, line), (second, none1), (missing, none2) = teacher.answer(rows)
    assert line == 1 and first.finish_reason in ("stop", "length") and first.output_tokens > 100
    assert first.prompt_tokens > 10 and first.text.startswith("<|begin_of_thought|>")
    assert second.finish_reason == "error" and "sample 1 has none" in second.error and none1 is None
    assert missing.finish_reason == "error" and "no response" in missing.error and none2 is None


def test_config_needs_a_recording_and_the_fingerprint_follows_its_content(tmp_path):
    with pytest.raises(ValueError, match="recorded.path"):
        GenerateConfig.model_validate({"backend": "recorded"})
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(MATH_TRACES.read_bytes())
    same = fingerprint(recorded(copy))["hash"]
    assert fingerprint(recorded(MATH_TRACES))["hash"] == same  # the recording's bytes count, not its path
    with copy.open("a") as handle:
        handle.write(json.dumps({"problem": "Q", "response": "A"}) + "\n")
    assert fingerprint(recorded(copy))["hash"] != same


def test_recorded_teacher_goes_through_the_generate_stage_and_resumes(ray_local, tmp_path):
    from longcot.generate.stage import generate_records

    problems = math500(6) + [records.new_problem("What is 2 + 2?", source="file:x")]
    out = tmp_path / "samples.jsonl"
    result = generate_records(problems, recorded(), output_path=out, rejected_path=tmp_path / "rej.jsonl",
                              progress=False, echo=False)
    rows = {r["id"]: r for r in load_records(out)}
    assert result.records_out == 7 == len(rows) and result.summary["error"] == 1
    raw = {records.problem_key(json.loads(line)["problem"]): json.loads(line) for line in MATH_TRACES.open()}
    for row in rows.values():
        if row["finish_reason"] == "error":
            assert row["problem"] == "What is 2 + 2?" and "no response" in row["error"]
            continue
        assert row["response"] == raw[records.problem_key(row["problem"])]["response"]
        assert row["model"] == "sky-t1-27b" and row["markers"] in ("sky", "none") and row["output_tokens"] > 0
        detail = records.lineage_detail(row, RecordedLineage)
        assert detail.backend == "recorded" and detail.recording_line >= 1
        assert json.loads(row["prompt"])[-1]["content"].startswith(row["problem"].strip())
    again = generate_records(problems, recorded(), output_path=out, rejected_path=tmp_path / "rej.jsonl",
                             progress=False, echo=False)
    assert again.summary["generated"] == 0 and again.summary["skipped_existing"] == 7
    with pytest.raises(ConfigError, match="holds samples made with other settings"):
        generate_records(problems, recorded(markers="think"), output_path=out, rejected_path=tmp_path / "r.jsonl",
                         progress=False, echo=False)


def test_a_missing_recording_fails_before_any_work(ray_local, tmp_path):
    from longcot.generate.stage import generate_records

    with pytest.raises(InputError, match="no such recording"):
        generate_records(math500(1), recorded(tmp_path / "nope.jsonl"), output_path=tmp_path / "o.jsonl",
                         rejected_path=tmp_path / "r.jsonl", progress=False, echo=False)
    assert not Path(tmp_path / "o.jsonl").exists()
