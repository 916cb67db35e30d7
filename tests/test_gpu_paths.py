"""The GPU paths on a machine without a GPU: each refuses at once, naming the GPU it lacks, before any stage
runs; and the CPU half of the GPU smoke test (``bench/gpu_smoke.sh``: model conversion, job YAMLs, problems)
works here, with the prompt it expects vLLM to reject rejected by the real tokenizer."""

from __future__ import annotations

import importlib.util
import shutil
import time

import pytest
import yaml

from conftest import REPO
from longcot.config import load_job, parse_job
from longcot.errors import ConfigError, RejectRow, ResourceError
from longcot.pipeline import run_job

SMOKE = REPO / "bench" / "gpu_smoke"
SMOKE_JOBS = sorted(SMOKE.glob("*.yaml"))
TRACES = REPO / "jobs" / "data" / "traces" / "math500_sky-t1-27b.jsonl"
no_gpu_here = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                 reason="the scenario is a machine without GPUs")


def smoke_module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SMOKE / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refusal(job, tmp_path, **kwargs) -> str:
    """The ResourceError ``run_job`` raises for ``job``, checked to come before any stage and within seconds."""
    job.runs_dir = str(tmp_path / "runs")
    started = time.perf_counter()
    with pytest.raises(ResourceError) as info:
        run_job(job, progress=False, **kwargs)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "runs").exists(), "no run directory: no stage started"
    return " ".join(str(info.value).split())


def test_the_smoke_test_covers_rollouts_serving_and_deepspeed_training_on_gpus():
    jobs = {path.stem: load_job(path) for path in SMOKE_JOBS}
    assert set(jobs) == {"rollouts", "serve", "train"}
    assert jobs["rollouts"].generate.backend == "vllm" and jobs["rollouts"].generate.resources.num_gpus == 1
    assert jobs["serve"].serve.backend == "vllm" and jobs["serve"].serve.smoke_test
    train = jobs["train"].train
    assert train.use_gpu and train.deepspeed == "zero2" and train.torch_backend() == "nccl" and train.mode == "lora"


@no_gpu_here
@pytest.mark.parametrize("path", SMOKE_JOBS, ids=lambda p: p.stem)
def test_each_gpu_smoke_job_is_refused_on_a_cpu_machine_before_any_stage_runs(path, tmp_path):
    stage = {"rollouts": "generate", "serve": "serve", "train": "train"}[path.stem]
    message = refusal(load_job(path), tmp_path, input_path=str(TRACES))
    assert f"stage {stage} asks for" in message and "GPU: 1" in message and "missing: GPU" in message


@no_gpu_here
def test_a_vllm_endpoint_is_refused_before_the_job_starts_even_without_gpus_in_its_resources(tmp_path):
    # a vLLM replica holds one GPU per tensor-parallel rank whatever resources say, and the job check sees that
    job = parse_job({"name": "serve-vllm", "serve": {"backend": "vllm",
                                                     "vllm": {"engine_kwargs": {"tensor_parallel_size": 2}}}})
    assert "stage serve asks for {CPU: 1, GPU: 2}" in refusal(job, tmp_path)


@no_gpu_here
def test_deepspeed_zero2_over_nccl_is_refused_on_a_cpu_machine(tmp_path):
    job = parse_job({"name": "ds", "train": {"use_gpu": True, "deepspeed": "zero2", "backend": "nccl",
                                             "num_workers": 2}})
    message = refusal(job, tmp_path, input_path=str(TRACES))
    assert "stage train asks for {CPU: 1, GPU: 1} per worker, x2 at once" in message and "missing: GPU" in message


def test_gpu_only_training_settings_without_gpus_fail_at_load_naming_the_setting():
    for settings, named in [({"backend": "nccl"}, "backend nccl needs GPUs"),
                            ({"deepspeed": "zero2_offload"}, "needs use_gpu"),
                            ({"precision": "fp16"}, "fp16 needs GPUs")]:
        with pytest.raises(ConfigError, match=named):
            parse_job({"train": settings})


def test_smoke_preparation_converts_the_model_and_writes_jobs_longcot_accepts(tmp_path, embedded_model):
    from longcot.generate.backends import VLLMBackend
    from longcot.generate.samples import messages_for
    from longcot.recordfiles import load_records

    smoke = smoke_module()
    line = smoke.prepare(tmp_path)
    assert line.startswith(f"model {embedded_model};")
    jobs = {part: load_job(tmp_path / "jobs" / f"{part}.yaml") for part in smoke.PARTS}
    assert jobs["rollouts"].generate.model == jobs["serve"].serve.model == jobs["train"].train.model == embedded_model
    assert jobs["train"].generate.recorded.path == str(TRACES)
    assert all(job.runs_dir == str(tmp_path / "runs" / part) for part, job in jobs.items())
    # the rollouts expect exactly the last problem to be rejected for max_model_len: so it is, on the driver
    generate = jobs["rollouts"].generate
    backend = VLLMBackend(generate)
    problems = load_records(tmp_path / "problems.jsonl")
    assert len(problems) == smoke.QUESTIONS + 1
    for problem in problems[:-1]:
        backend.render(messages_for(problem, generate))
    with pytest.raises(RejectRow, match="generate.vllm.max_model_len 1024"):
        backend.render(messages_for(problems[-1], generate))
    written = yaml.safe_load((tmp_path / "jobs" / "serve.yaml").read_text())
    assert written["serve"]["port"] != 8331  # a free port of this machine


@no_gpu_here
def test_the_smoke_script_takes_the_parts_named_and_refuses_at_once_without_a_gpu(tmp_path):
    import subprocess

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "bench" / "gpu_smoke.sh"), *args], capture_output=True, text=True,
                              timeout=120, env={"PATH": "/usr/bin:/bin", "GPU_SMOKE_DIR": str(tmp_path / "work"),
                                                "GPU_SMOKE_SUMMARY": str(tmp_path / "summary.txt")})

    unknown = script("train", "vllm")
    assert unknown.returncode == 2 and "unknown argument 'vllm'" in unknown.stderr
    refused = script("train")
    assert refused.returncode == 2
    assert "FAIL" in refused.stdout and "no GPU" in (tmp_path / "summary.txt").read_text()


def test_smoke_verdict_of_a_part_that_never_ran_is_a_one_line_failure(tmp_path):
    ok, line = smoke_module().verdict("serve", tmp_path)
    assert not ok and line == f"no run directory under {tmp_path / 'runs' / 'serve'}"
