"""End-to-end training on a real local Ray cluster (2 CPU workers, gloo): LoRA overfit + round trip,
and DeepSpeed ZeRO-2 with workers killed part-way, automatic restart and resume of a stopped run by name.

Sequences are kept short (a brief system prompt, no instruction) so a CPU step of the 135M student is quick.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from longcot.records import new_problem
from longcot.recordfiles import write_records
from longcot.train.config import TrainConfig

FACTS = [
    ("What is 2+3?", "2+3=5. The answer is \\boxed{5}."),
    ("What is 7*6?", "7*6=42. The answer is \\boxed{42}."),
    ("What is 9-4?", "9-4=5. The answer is \\boxed{5}."),
    ("What is 12/3?", "12/3=4. The answer is \\boxed{4}."),
    ("What is 8+8?", "8+8=16. The answer is \\boxed{16}."),
    ("What is 5*5?", "5*5=25. The answer is \\boxed{25}."),
    ("What is 100-1?", "100-1=99. The answer is \\boxed{99}."),
    ("What is 3^3?", "3^3=27. The answer is \\boxed{27}."),
]
SHORT = {"system_prompt": "Be brief.", "instruction": "", "cutoff_len": 64}


@pytest.fixture(scope="module")
def fact_records(tmp_path_factory) -> Path:
    rows = []
    for question, answer in FACTS:
        row = new_problem(question, source="test:overfit")
        row["response"] = answer
        rows.append(row)
    wrong = new_problem("What is 1+1?", source="test:overfit")
    wrong.update(response="1+1=3. The answer is \\boxed{3}.", correct=False, verdict="incorrect")
    path = tmp_path_factory.mktemp("train-data") / "facts.jsonl"
    write_records(path, rows + [wrong])
    return path


def _losses(summary_path: str) -> list[tuple[int, float]]:
    history = json.loads(Path(summary_path).read_text())["log_history"]
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


@pytest.mark.slow
def test_lora_overfits_on_two_workers_and_round_trips(ray_local, fact_records, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from longcot.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer
    from longcot.train import stage
    from longcot.train.stage import fine_tune

    monkeypatch.setattr(stage, "LOCAL_ENCODE_ROWS", 0)  # tokenize in Ray Data tasks, as for a large input

    cfg = TrainConfig.model_validate(
        {
            "num_workers": 2,
            "max_steps": 30,
            "per_device_batch_size": 1,
            "learning_rate": 2e-3,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "logging_steps": 1,
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "data": {**SHORT, "packing": False},
            "checkpoints": {"save_steps": 15},
            "merge": True,
        }
    )
    outcome = fine_tune(cfg, fact_records, tmp_path / "out", default_storage=tmp_path / "ckpt")
    s = outcome.summary
    assert (outcome.records_in, outcome.records_out, outcome.records_rejected) == (9, 8, 1)
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert "verdict is incorrect" in rejected[0]["reason"] and rejected[0]["record"]["problem"] == "What is 1+1?"
    assert s["global_step"] == 30 and s["sequences"] == 8
    assert (s["engine"], s["device"]) == ("DistributedDataParallel", "cpu")  # two workers: what really trained
    losses = _losses(outcome.artifacts["train_summary"])
    first, last = losses[0][1], sum(loss for _, loss in losses[-3:]) / 3
    assert last <= 0.5 * first, f"loss went {first:.3f} -> {last:.3f}"
    assert s["tokens_per_second"] > 0 and s["step_time"] > 0 and s["lengths"]["truncated"] == 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(outcome.artifacts["tensorboard"])
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/tokens_per_second", "train/step_time"} <= tags

    # Round trip: the saved adapter loads into transformers and changes what the model says.
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7*6?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def answer(model) -> str:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    base = answer(load_causal_lm(DEFAULT_MODEL, dtype="float32"))  # as the merged model below is stored
    tuned = answer(load_causal_lm(DEFAULT_MODEL, adapter=outcome.artifacts["student_adapter"], dtype="float32"))
    merged = answer(AutoModelForCausalLM.from_pretrained(outcome.artifacts["student_model"]).eval())
    assert tuned != base
    assert "\\boxed{42}" in tuned and "\\boxed{42}" not in base
    assert merged == tuned


def _registered_steps(snapshot: Path) -> list[dict]:
    try:
        data = json.loads(snapshot.read_text())
    except (OSError, ValueError):
        return []
    return [entry.get("metrics", {}) for entry in data.get("checkpoint_results", [])]


class WorkerKiller(threading.Thread):
    """SIGKILLs one Ray Train worker of this test's own cluster each time Ray Train has registered a
    checkpoint at or past the next step in ``at_steps`` (what the controller would resume from)."""

    def __init__(self, snapshot: Path, at_steps: list[int]):
        super().__init__(daemon=True)
        self.snapshot, self.pending = snapshot, list(at_steps)
        self.seen: list[dict] = []  # checkpoint metrics at each kill
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while self.pending and not self.stop.wait(0.1):
            metrics = _registered_steps(self.snapshot)
            if not metrics or max(m.get("step", 0) for m in metrics) < self.pending[0]:
                continue
            for proc in psutil.Process(os.getpid()).children(recursive=True):
                try:
                    if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::RayTrainWorker"):
                        proc.send_signal(signal.SIGKILL)
                        break
                except (psutil.Error, IndexError):
                    continue
            else:
                continue
            self.seen.append(max(metrics, key=lambda m: m.get("step", 0)))
            self.pending.pop(0)


@pytest.mark.slow
def test_deepspeed_zero2_survives_killed_workers_and_resumes_by_name(ray_local, fact_records, tmp_path):
    from longcot.train.stage import TrainingStopped, fine_tune

    storage = tmp_path / "ckpt"
    cfg = TrainConfig.model_validate(
        {
            "num_workers": 2,
            "deepspeed": "zero2",
            "max_steps": 12,
            "per_device_batch_size": 1,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "lora": {"rank": 4, "alpha": 8},
            "data": SHORT,
            "checkpoints": {"run_name": "zero2-faults", "save_steps": 3, "num_to_keep": 2, "max_failures": 1},
        }
    )
    killer = WorkerKiller(storage / "zero2-faults" / "checkpoint_manager_snapshot.json", at_steps=[3, 6])
    killer.start()
    try:
        # 1st kill: FailureConfig restarts the workers from the last checkpoint; 2nd kill: out of retries.
        with pytest.raises(TrainingStopped, match="run it again with checkpoints.run_name: zero2-faults"):
            fine_tune(cfg, fact_records, tmp_path / "out", default_storage=storage)
    finally:
        killer.stop.set()
    assert len(killer.seen) == 2
    restarted = killer.seen[1]
    assert restarted["resumed_from_step"] >= 3, "the automatic restart did not resume from a checkpoint"

    # The stopped run resumes by name from its last checkpoint and its step count continues.
    outcome = fine_tune(cfg, fact_records, tmp_path / "out", default_storage=storage)
    s = outcome.summary
    assert s["global_step"] == 12 and 6 <= s["resumed_from_step"] < 12
    steps = [step for step, _ in _losses(outcome.artifacts["train_summary"])]
    assert steps == sorted(steps) and steps[-1] == 12
    assert (Path(outcome.artifacts["student_adapter"]) / "adapter_model.safetensors").exists()
    # The DeepSpeed checkpoints hold the ZeRO optimizer shards of both ranks.
    shards = {p.name for p in storage.glob("zero2-faults/checkpoint_*/checkpoint/global_step*/*optim_states.pt")}
    assert any("rank_0" in n for n in shards) and any("rank_1" in n for n in shards), shards


def test_gpu_run_on_a_cpu_cluster_fails_at_once(ray_local, fact_records, tmp_path):
    from longcot.errors import ResourceError
    from longcot.train.stage import fine_tune

    started = time.perf_counter()
    with pytest.raises(ResourceError, match="GPU"):
        fine_tune(TrainConfig(use_gpu=True, num_workers=2), fact_records, tmp_path / "out")
    with pytest.raises(ResourceError, match="x3 at once"):
        fine_tune(TrainConfig(num_workers=3, resources={"num_cpus": 2}), fact_records, tmp_path / "out")
    assert time.perf_counter() - started < 30
