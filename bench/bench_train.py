"""Ray Train overhead: the same model, data and steps trained by Ray Train with one worker and by a plain
single-process transformers Trainer, side by side in one run.

Both use the same pieces (chat template, loss mask, packing, TrainingArguments, LoRA model), the same
packed sequences, the same number of optimizer steps and the same torch threads (the worker's 1 CPU), on CPU. Printed per side:
- loop: the Trainer's training loop (``trainer.train``), and tokens/s over it;
- end to end: everything from records to the saved adapter (Ray side: Ray Data tokenizing and packing,
  starting the worker, the checkpoint reports; not ``ray.init``).
Ratio = Ray Train / plain (target for the loop: <= 1.15).

    .venv/bin/python bench/bench_train.py [--traces 16] [--steps 12] [--cutoff 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def trace_records(path: Path, limit: int) -> list[dict]:
    import json

    from longcot.records import new_problem

    rows = []
    with path.open() as handle:
        for line in handle:
            raw = json.loads(line)
            row = new_problem(raw["problem"], source=f"bench:{raw['benchmark']}", reference_answer=raw["reference_answer"])
            row["response"] = raw["response"]
            rows.append(row)
            if len(rows) == limit:
                break
    return rows


def plain_trainer(config, rows: list[dict], out_dir: Path) -> dict:
    """The baseline: one process, transformers Trainer over an in-memory list of the same packs."""
    from transformers import Trainer, TrainingArguments

    from longcot.errors import RejectRow
    from longcot.models import load_tokenizer
    from longcot.train.examples import chat_messages, collate_packs, encode, plan_packs
    from longcot.train.recipe import training_arguments
    from longcot.train.worker import StepMetricsCallback, build_model

    import torch

    torch.set_num_threads(int(config.resources.num_cpus))  # what Ray gives its worker (OMP_NUM_THREADS)
    started = time.perf_counter()
    tokenizer = load_tokenizer(config.model, padding_side="right")
    examples = []
    for r in rows:
        try:
            examples.append(encode(chat_messages(r, config.data), tokenizer, config.data.cutoff_len))
        except RejectRow:  # the stage rejects the same rows (a prompt longer than the cutoff)
            pass
    lengths = [len(e.input_ids) for e in examples]
    groups = plan_packs(lengths, config.data.cutoff_len) if config.data.packing else [[i] for i in range(len(examples))]
    packs = [{"input_ids": [examples[i].input_ids for i in g], "labels": [examples[i].labels for i in g]} for g in groups]
    random.Random(config.seed).shuffle(packs)
    kwargs = training_arguments(config, output_dir=str(out_dir / "hf"), max_steps=config.max_steps)
    args = TrainingArguments(**{**kwargs, "ddp_backend": None})  # one process: no process group
    model = build_model(config, args)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=packs,
        data_collator=lambda feats: collate_packs([f["input_ids"] for f in feats], [f["labels"] for f in feats]),
        processing_class=tokenizer,
        callbacks=[StepMetricsCallback()],
    )
    loop_started = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - loop_started
    trainer.save_model(str(out_dir / "final"))
    return {
        "loop": loop,
        "total": time.perf_counter() - started,
        "tokens": trainer.state.num_input_tokens_seen,
        "steps": trainer.state.global_step,
        "packs": len(packs),
    }


def ray_trainer(config, records: Path, out_dir: Path) -> dict:
    from longcot.train.stage import fine_tune

    started = time.perf_counter()
    outcome = fine_tune(config, records, out_dir, default_storage=out_dir / "ckpt")
    s = outcome.summary
    return {
        "loop": s["train_seconds"],
        "total": time.perf_counter() - started,
        "tokens": s["num_input_tokens_seen"],
        "steps": s["global_step"],
        "packs": s["sequences"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    opts = parser.parse_args()

    from conftest import MATH_TRACES
    from longcot.cluster import connect, shutdown_if_local
    from longcot.recordfiles import write_records
    from longcot.settings import RayConfig
    from longcot.train.config import TrainConfig

    config = TrainConfig.model_validate(
        {
            "num_workers": 1,
            "max_steps": opts.steps,
            "per_device_batch_size": 1,
            "logging_steps": max(1, opts.steps // 4),
            "data": {"cutoff_len": opts.cutoff, "warn_truncated_share": 1.0},
            "checkpoints": {"save_steps": opts.steps},  # one checkpoint, at the end, on both sides
        }
    )
    rows = trace_records(MATH_TRACES, opts.traces)
    print(
        f"SmolLM2-135M LoRA r{config.lora.rank} all-linear, {len(rows)} math500 traces, cutoff {opts.cutoff}, "
        f"packing, {opts.steps} steps of 1 sequence; machine: 2-core CPU, no GPU, shared with other jobs"
    )
    connect(RayConfig(num_cpus=2, object_store_memory_mb=512))
    results: dict[str, list[dict]] = {"plain Trainer": [], "Ray Train, 1 worker": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        records = Path(tmp) / "records.jsonl"
        write_records(records, rows)
        for i in range(opts.repeats):  # alternate the sides so drifting load hits both alike
            results["plain Trainer"].append(plain_trainer(config, rows, Path(tmp) / f"plain-{i}"))
            results["Ray Train, 1 worker"].append(ray_trainer(config, records, Path(tmp) / f"ray-{i}"))
    shutdown_if_local()

    median = {side: {k: statistics.median(r[k] for r in runs) for k in ("loop", "total", "tokens")} for side, runs in results.items()}
    base = median["plain Trainer"]
    print(f"{'':22s} {'loop s':>8s} {'tokens/s':>9s} {'end-to-end s':>13s} {'loop ratio':>11s} {'e2e ratio':>10s}")
    for side, m in median.items():
        steps = {r["steps"] for r in results[side]}
        print(
            f"{side:22s} {m['loop']:8.1f} {m['tokens'] / m['loop']:9.1f} {m['total']:13.1f} "
            f"{m['loop'] / base['loop']:11.2f} {m['total'] / base['total']:10.2f}   (steps {sorted(steps)}, "
            f"{int(m['tokens'])} tokens)"
        )


if __name__ == "__main__":
    main()
