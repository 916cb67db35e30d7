"""The generate stage end to end on local Ray: hf backend, resume, SIGKILL part-way, vllm fail-fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from longcot import records
from longcot.errors import ConfigError, ResourceError
from longcot.generate.backends import VLLMBackend, vllm_prompt_problem, vllm_records, vllm_requests
from longcot.generate.config import GenerateConfig, GenerateLineage, SamplingConfig, VLLMLineage
from longcot.generate.samples import expand_samples, sample_seed
from longcot.recordfiles import load_records, write_records
from longcot.rundir import RunDir
from longcot.stages import StageContext

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 2 + 3?", "What is 7 - 4?", "What is 3 * 3?", "What is 8 / 2?", "What is 1 + 1?", "What is 9 - 5?"]
# Short prompts (no system turn) and few tokens keep these runs cheap on 2 cores.
VLLM = VLLMLineage(backend="vllm", model="m", tensor_parallel_size=1, pipeline_parallel_size=1, replicas=1)
FAST = {"system_prompt": "", "batch_size": 2, "sampling": {"n": 2, "max_tokens": 4}}


def problems_file(path: Path, questions=QUESTIONS) -> Path:
    write_records(path, [records.new_problem(q, source="file:q.jsonl") for q in questions])
    return path


# --- vllm: the processor config it builds, and the conversions around the engine (CPU only) ----------


def test_vllm_processor_config_from_yaml_settings():
    cfg = GenerateConfig.model_validate({
        "backend": "vllm", "model": "Qwen/QwQ-32B", "concurrency": 3, "batch_size": 32,
        "resources": {"accelerator_type": "H100"},
        "vllm": {"tensor_parallel_size": 4, "max_model_len": 16384, "gpu_memory_utilization": 0.9,
                 "engine_kwargs": {"enable_prefix_caching": True}, "max_concurrent_batches": 4},
    })
    pc = VLLMBackend(cfg).processor_config()
    assert type(pc).__name__ == "vLLMEngineProcessorConfig" and "vllm" not in sys.modules
    assert pc.model_source == "Qwen/QwQ-32B" and pc.concurrency == 3 and pc.batch_size == 32
    assert pc.accelerator_type == "H100" and pc.max_concurrent_batches == 4 and pc.should_continue_on_error
    assert pc.engine_kwargs["tensor_parallel_size"] == 4 and pc.engine_kwargs["max_model_len"] == 16384
    assert pc.engine_kwargs["enable_prefix_caching"] is True and pc.engine_kwargs["gpu_memory_utilization"] == 0.9
    assert not pc.chat_template_stage and not pc.tokenize_stage and not pc.detokenize_stage
    assert VLLMBackend(cfg).gpus_per_replica() == 4


def test_vllm_rows_in_and_out_of_the_engine():
    sampling = SamplingConfig(max_tokens=5, temperature=0.6, seed=7)
    rows = [{**r, "prompt": "<p>"} for r in expand_samples(records.new_problem("Q?", source="s"), 3)]
    reqs = vllm_requests(rows, sampling=sampling)
    assert reqs[0]["prompt"] == "<p>" and reqs[0]["sampling_params"] == {
        "temperature": 0.6, "top_p": 1.0, "max_tokens": 5, "seed": sample_seed(7, rows[0]["id"])}
    engine_out = [
        {**reqs[0], "generated_text": "<think>a</think> 5", "num_generated_tokens": 3, "num_input_tokens": 9,
         "time_taken_llm": 0.2, "__inference_error__": ""},
        {**reqs[1], "generated_text": "<think>long", "num_generated_tokens": 5, "num_input_tokens": 9,
         "time_taken_llm": 0.3, "__inference_error__": ""},
        {**reqs[2], "generated_text": "", "num_generated_tokens": 0, "num_input_tokens": 0,
         "time_taken_llm": -1, "__inference_error__": "ValueError: prompt too long"},
    ]
    out = vllm_records(engine_out, sampling=sampling, model="m", detail=VLLM)
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert [r["finish_reason"] for r in out] == ["stop", "length", "error"]
    assert out[0]["solution"] == " 5" and out[1]["truncated"] and out[2]["error"] == "ValueError: prompt too long"
    assert records.lineage_detail(out[0], GenerateLineage).sampling.seed == sample_seed(7, rows[0]["id"])


def test_vllm_sample_that_fills_the_context_is_length_limited_not_stopped():
    sampling = SamplingConfig(max_tokens=50)
    row = {**expand_samples(records.new_problem("Q?", source="s"), 1)[0], "prompt": "<p>"}
    req = vllm_requests([row], sampling=sampling)[0]
    capped = {**req, "generated_text": "<think>cut", "num_input_tokens": 90, "num_generated_tokens": 10,
              "time_taken_llm": 0.1, "__inference_error__": ""}
    [with_limit] = vllm_records([capped], sampling=sampling, model="m", detail=VLLM, max_model_len=100)
    [without] = vllm_records([capped], sampling=sampling, model="m", detail=VLLM)
    assert with_limit["finish_reason"] == "length" and with_limit["truncated"]
    assert without["finish_reason"] == "stop"  # nothing says the context was full


def test_vllm_prompt_problem_names_what_vllm_would_refuse():
    assert vllm_prompt_problem("  \n", 0, 100) == "the rendered prompt is empty"
    assert vllm_prompt_problem("<p>", 99, 100) is None
    assert "100 tokens, which leaves no room to generate within generate.vllm.max_model_len 100" in \
        vllm_prompt_problem("<p>", 100, 100)
    assert vllm_prompt_problem("<p>", 10**6, None) is None  # the engine's own limit, unknown here


def test_vllm_prompt_too_long_for_the_context_is_rejected_before_any_engine(tmp_path, embedded_model):
    from longcot.generate.stage import generate_records

    cfg = GenerateConfig(backend="vllm", system_prompt="", vllm={"max_model_len": 64})
    backend = VLLMBackend(cfg)
    assert backend.render([{"role": "user", "content": "What is 2 + 3?"}])  # fits: sent as rendered
    long_problem = records.new_problem("What is " + " + ".join(["1"] * 80) + "?", source="s")
    # every prompt is refused on the driver, so no engine (and no GPU, no Ray) is ever needed
    result = generate_records([long_problem], cfg, output_path=tmp_path / "o.jsonl",
                              rejected_path=tmp_path / "r.jsonl", progress=False, echo=False)
    assert (result.records_in, result.records_out, result.records_rejected) == (1, 0, 1)
    [rejected] = [json.loads(line) for line in open(tmp_path / "r.jsonl")]
    assert rejected["stage"] == "generate" and rejected["record"]["problem"] == long_problem["problem"]
    assert rejected["reason"].endswith("tokens, which leaves no room to generate within generate.vllm.max_model_len 64")


@pytest.mark.slow
def test_vllm_fails_fast_on_a_cpu_only_cluster(ray_local, tmp_path):
    from longcot.generate.stage import generate_records

    started = time.perf_counter()
    with pytest.raises(ResourceError, match=r"needs GPUs: 2 per replica.*backend: hf"):
        generate_records([records.new_problem("Q?", source="s")],
                         GenerateConfig(backend="vllm", vllm={"tensor_parallel_size": 2}),
                         output_path=tmp_path / "o.jsonl", rejected_path=tmp_path / "r.jsonl", progress=False)
    assert time.perf_counter() - started < 120
    assert not (tmp_path / "o.jsonl").exists()


# --- hf backend through the whole stage ------------------------------------------------------------


@pytest.mark.slow
def test_hf_stage_generates_resumes_and_refuses_to_mix(ray_local, tmp_path):
    src = problems_file(tmp_path / "problems.jsonl", QUESTIONS[:2])
    with open(src, "a") as f:
        f.write("{not json\n")
        f.write(json.dumps(records.new_problem("What is 2 + 3?", source="file:q.jsonl")) + "\n")  # a repeat
        f.write(json.dumps(records.conform({"problem": ""})) + "\n")
    run_dir = RunDir(tmp_path / "run")
    out = tmp_path / "samples"  # a directory of Parquet parts
    ctx = StageContext(run_dir=run_dir, output_override=str(out), progress=False, ray=None)
    from longcot.generate.stage import run

    cfg = GenerateConfig.model_validate(FAST)
    result = run(cfg, src, ctx)
    rows = load_records(out)
    assert (result.records_in, result.records_out, result.records_rejected) == (5, 4, 3)
    assert len({r["id"] for r in rows}) == 4 and Counter(r["sample_index"] for r in rows) == {0: 2, 1: 2}
    for r in rows:
        assert r["response"] and r["finish_reason"] in ("stop", "length") and r["model"] == cfg.model
        assert r["prompt"].endswith("<|im_start|>assistant\n") and "meticulous" not in r["prompt"]  # system: ''
        assert r["prompt_tokens"] > 0 and 0 < r["output_tokens"] <= 4
        detail = records.lineage_detail(r, GenerateLineage)
        assert detail.backend == "hf" and detail.sampling.max_tokens == 4 and detail.seconds > 0
    rejected = [json.loads(line) for line in open(tmp_path / "samples" / "rejected.jsonl")]
    reasons = " | ".join(e["reason"] for e in rejected)
    assert "malformed JSON" in reasons and "repeats problem" in reasons and "no problem text" in reasons
    summary = json.loads((run_dir.path / "generate" / "summary.json").read_text())
    assert summary["generated"] == 4 and summary["ok"] + summary["truncated"] == 4 and summary["error"] == 0
    assert summary["output_tokens_per_s"] > 0 and summary["output_len_p90"] >= summary["output_len_p50"] > 0
    assert result.summary["prompts_per_s"] == summary["prompts_per_s"]
    # where the time went, phase by phase; the engine's own share cannot exceed the run's
    phases = summary["phases"]
    assert set(phases) == {"prepare", "ray_connect", "check", "actor_start", "model_load", "generating", "commit",
                           "other"}
    assert phases["model_load"] > 0 and phases["generating"] > 0 and all(v >= 0 for v in phases.values())
    assert phases["model_load"] + phases["generating"] <= summary["seconds"]

    again = run(cfg, src, ctx)  # same settings: nothing left to do
    assert again.summary["generated"] == 0 and again.summary["skipped_existing"] == 4 and again.records_out == 4
    more = run(cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"n": 3})}), src, ctx)
    assert more.summary["generated"] == 2 and more.records_out == 6
    assert Counter(Counter(r["id"] for r in load_records(out)).values()) == {1: 6}
    hotter = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"temperature": 0.9})})
    with pytest.raises(ConfigError, match="sampling.temperature: 0.0 -> 0.9"):
        run(hotter, src, ctx)


@pytest.mark.slow
def test_sigkill_part_way_then_rerun_writes_every_id_once(ray_local, tmp_path):
    """SIGKILL a real `longcot generate` once some samples are committed; the re-run finishes the rest.

    Both runs are drivers of the session's local Ray (as under ``ray job submit``): killing the driver
    ends its job and actors, and saves starting a second Ray instance on a small machine."""
    src = problems_file(tmp_path / "problems.jsonl")
    out = tmp_path / "samples.jsonl"
    cmd = [str(REPO / ".venv" / "bin" / "longcot"), "generate", "-i", str(src), "-o", str(out), "--n", "1",
           "--max-tokens", "3", "--batch-size", "1", "--set", "system_prompt=''", "--runs-dir", str(tmp_path / "runs"),
           "--no-progress"]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (out.exists() and out.read_text().count("\n") >= 2):
            assert proc.poll() is None, "generate exited before it could be killed"
            assert time.time() < deadline, "no samples committed in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = load_records(out)
    assert 2 <= len(first) < len(QUESTIONS)

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(first)} already present" in rerun.stderr.replace("\n", " ")
    ids = Counter(r["id"] for r in load_records(out))
    wanted = {s["id"] for q in QUESTIONS for s in expand_samples(records.new_problem(q, source="file:q.jsonl"), 1)}
    assert set(ids) == wanted and set(ids.values()) == {1}
