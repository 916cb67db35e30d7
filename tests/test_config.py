"""Job YAML validation: a bad config fails at load time, naming the field and the allowed values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from longcot.config import JobConfig, load_job, parse_job
from longcot.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_job_yaml_validates():
    jobs = sorted((REPO / "jobs").glob("*.yaml"))
    assert jobs, "jobs/ should ship job YAMLs"
    for path in jobs:
        job = load_job(path)
        assert job.stages(), f"{path.name} configures no stage"


def test_stages_come_out_in_pipeline_order():
    job = parse_job({"verify": {}, "problems": {"sources": [{"kind": "benchmark", "name": "gsm8k"}]}})
    assert job.stages() == ["problems", "verify"]


def test_unknown_choice_names_field_and_allowed_values():
    with pytest.raises(ConfigError) as info:
        parse_job({"generate": {"backend": "tgi"}}, "job.yaml")
    message = str(info.value)
    assert "job.yaml: generate.backend" in message
    assert "'hf', 'vllm', 'openai', 'recorded' or 'llamacpp'" in message and "tgi" in message


def test_unknown_key_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match=r"generate\.temprature: unknown field"):
        parse_job({"generate": {"temprature": 0.7}})


def test_source_kind_is_discriminated():
    with pytest.raises(ConfigError, match=r"problems\.sources\.0"):
        parse_job({"problems": {"sources": [{"kind": "ftp", "path": "x"}]}})


def test_invalid_yaml_names_the_file_and_line_in_every_reader(tmp_path):
    from longcot.cli.options import stage_config
    from longcot.cluster import load_autoscaler
    from longcot.dlcot.config import DlcotConfig
    from longcot.errors import ResourceError
    from longcot.problems.benchmarks import load_registry
    from longcot.sweep.table import load_reference

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngenerate:\n  backend: [hf\n")
    where = r"bad\.yaml:\d+: invalid YAML"
    with pytest.raises(ConfigError, match=where):
        load_job(bad)
    with pytest.raises(ConfigError, match=where):  # `longcot dlcot --config bad.yaml`
        stage_config(DlcotConfig, "dlcot", bad, {})
    with pytest.raises(ConfigError, match=where):
        load_reference(str(bad))
    with pytest.raises(ConfigError, match=where):
        load_registry([str(tmp_path)])
    with pytest.raises(ResourceError, match=where):
        load_autoscaler(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the job config"):
        load_job(tmp_path / "missing.yaml")


def test_config_hash_changes_with_content():
    a = parse_job({"verify": {"timeout_s": 5}})
    b = parse_job({"verify": {"timeout_s": 6}})
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == parse_job({"verify": {"timeout_s": 5}}).config_hash()


def test_cli_exits_2_with_one_line_naming_the_field(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("name: x\ngenerate:\n  backend: tgi\n")
    proc = subprocess.run(
        [sys.executable, "-m", "longcot", "run", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "generate.backend" in proc.stderr and "'hf', 'vllm', 'openai', 'recorded' or 'llamacpp'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_schema_prints_the_job_schema():
    proc = subprocess.run(
        [sys.executable, "-m", "longcot", "config-schema"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema == JobConfig.model_json_schema()
    assert {"problems", "generate", "verify", "train", "eval", "serve"} <= set(schema["properties"])


def test_student_without_a_train_stage_or_merge_fails_at_load():
    with pytest.raises(ConfigError, match=r"eval.models\[0\].model: @student .* no train stage"):
        parse_job({"eval": {"models": [{"name": "s", "model": "@student"}]}})
    with pytest.raises(ConfigError, match=r"serve.model: @student .* no train stage"):
        parse_job({"serve": {"model": "@student"}})
    vllm_eval = {"models": [{"name": "s", "model": "@student", "generate": {"backend": "vllm"}}]}
    with pytest.raises(ConfigError, match="set train.merge: true"):
        parse_job({"train": {"mode": "lora"}, "eval": vllm_eval})
    assert parse_job({"train": {"mode": "lora", "merge": True}, "eval": vllm_eval}).stages() == ["train", "eval"]
    assert parse_job({"train": {}, "eval": {"models": [{"name": "s", "model": "@student"}]}}).stages() == ["train", "eval"]


def test_run_overrides_reach_nested_keys_and_list_entries():
    from longcot.cli.options import _merge, parse_overrides

    base = load_job(Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml").model_dump(mode="json", exclude_unset=True)
    merged = _merge(base, parse_overrides(["problems.sources.0.limit=2", "train.max_steps=3",
                                           "dlcot.resources.resources={pinned: 1}"]))
    job = parse_job(merged, "quickstart (with --set)")
    assert job.problems.sources[0].limit == 2 and job.problems.sources[0].name == "math500"
    assert job.train.max_steps == 3 and job.dlcot.resources.resources == {"pinned": 1.0}
    with pytest.raises(ConfigError, match="--set sources.5: sources has 1 entries"):
        _merge(base, parse_overrides(["problems.sources.5.limit=2"]))
    with pytest.raises(ConfigError, match="train.max_steps"):
        parse_job(_merge(base, parse_overrides(["train.max_steps=-1"])), "quickstart (with --set)")


def test_an_option_left_out_keeps_the_set_value_and_one_given_wins():
    from longcot.cli.options import _merge, given, parse_overrides, stage_config
    from longcot.serve.config import ServeConfig

    flags = given({"model": "embedded:tiny-gpt2", "port": None, "checkpoints": {"run_name": None}})
    assert flags == {"model": "embedded:tiny-gpt2"}
    overrides = _merge(parse_overrides(["port=9001", "model=other"]), flags)
    cfg = stage_config(ServeConfig, "serve", None, overrides)
    assert cfg.port == 9001 and cfg.model == "embedded:tiny-gpt2"


def test_job_with_overrides_serves_run_and_sweep_alike():
    from longcot.cli.options import job_with_overrides

    jobs = Path(__file__).resolve().parents[1] / "jobs"
    sweep = job_with_overrides(jobs / "structure-vs-content.yaml", ["sweep.limit=7"])
    assert sweep.sweep.limit == 7 and sweep.stages() == load_job(jobs / "structure-vs-content.yaml").stages()
    assert job_with_overrides(jobs / "quickstart.yaml", None) == load_job(jobs / "quickstart.yaml")
    with pytest.raises(ConfigError, match=r"\(with --set\): train.max_steps"):
        job_with_overrides(jobs / "quickstart.yaml", ["train.max_steps=0"])
