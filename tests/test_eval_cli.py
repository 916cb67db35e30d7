"""`longcot eval` options: NAME=VALUE models, adapters and saved responses; bad options exit 2 with one line."""

from __future__ import annotations

import pytest

from longcot.cli import main
from longcot.cli.eval import _models, _responses
from longcot.errors import ConfigError


def test_models_and_adapters_are_named():
    assert _models(["embedded:smollm2-135m-instruct"], ["/tmp/adapter"]) == [
        {"name": "model", "model": "embedded:smollm2-135m-instruct", "adapter": "/tmp/adapter"}]
    two = _models(["base=embedded:smollm2-135m-instruct", "student=Qwen/Qwen2.5-0.5B"], ["student=/a"])
    assert two == [{"name": "base", "model": "embedded:smollm2-135m-instruct"},
                   {"name": "student", "model": "Qwen/Qwen2.5-0.5B", "adapter": "/a"}]
    with pytest.raises(ConfigError, match="no --model named 'x'"):
        _models(["base=m"], ["x=/a"])
    with pytest.raises(ConfigError, match="with several models, write NAME=PATH"):
        _models(["a=m", "b=m"], ["/a"])


def test_saved_responses_take_their_name_from_the_option_or_the_file():
    assert _responses(["sky=traces/a.jsonl", "traces/b.jsonl"], "math500") == [
        {"name": "sky", "path": "traces/a.jsonl", "benchmark": "math500"},
        {"name": "b", "path": "traces/b.jsonl", "benchmark": "math500"}]


def test_bad_options_exit_2_naming_the_field(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run directory may be created before the stage fails
    for argv, message in [
        (["eval", "--adapter", "/a"], "--adapter needs a --model"),
        (["eval", "--n", "0", "--limit", "1"], "generate.sampling.n"),
        (["eval", "--set", "k=[0]"], "every k must be >= 1"),
        (["eval", "--k", "0", "--set", "k=[1]"], "every k must be >= 1"),  # an option given wins over --set
        (["eval", "-b", "mmlu", "--model", "m=embedded:smollm2-135m-instruct", "--output", "/nonexistent/x"],
         "unknown benchmark 'mmlu'"),
    ]:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_eval_report_rejects_a_file_that_is_not_results(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit) as done:
        main(["eval-report", str(bad), "--output", str(tmp_path / "out")])
    assert done.value.code == 3 and "not an eval results.json" in capsys.readouterr().err


def test_the_rescoring_job_names_the_shared_traces():
    from conftest import AIME_TRACES, MATH_TRACES, REPO

    from longcot.config import load_job

    job = load_job(REPO / "jobs" / "eval-traces.yaml")
    assert job.stages() == ["eval"] and job.eval.model_entries() == []
    assert [REPO / r.path for r in job.eval.responses] == [MATH_TRACES, AIME_TRACES]
