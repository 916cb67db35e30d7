"""Cluster placement and planning, measured side by side on this machine.

1. Fail fast: a GPU stage on a CPU-only cluster. Ray alone leaves such an actor pending for ever (here:
   still pending after ``--wait`` seconds); longcot's preflight (``JobPlacement.check``) refuses the job.
   Printed: both times and their ratio.
2. Planning inputs: the length of real long-CoT traces (the shipped Sky-T1 traces, counted with the
   embedded model's tokenizer), then the planning table of docs/planning.md computed from them and from
   the published anchors listed in ANCHORS.

    .venv/bin/python bench/bench_cluster.py [--wait 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "jobs" / "data" / "traces"

# Published anchors (each with its source); see docs/planning.md.
ANCHORS = {
    # NovaSky, "Sky-T1: Train your own O1 preview model within $450" (blog, Jan 2025): 17k traces,
    # Qwen2.5-32B-Instruct full fine-tune, 3 epochs, 19 h on 8 H100 (DeepSpeed ZeRO-3 offload), < $450.
    "skyt1_traces": 17_000,
    "skyt1_h100_hours": 19 * 8,
    "skyt1_cost_usd": 450,
    # GPUStack performance lab, "Optimizing Qwen3-32B throughput on NVIDIA H100": vLLM baseline,
    # one H100, 2,149-4,006 total tokens/s over its prompt mixes. We plan with 1,500 *output* tokens/s:
    # 16k-token generations fill the KV cache, which caps the batch.
    "h100_32b_output_tps": 1500,
    # NVIDIA datasheets: memory bandwidth of an H100 SXM and of an L4 (decode is bandwidth-bound).
    "h100_tbps": 3.35,
    "l4_tbps": 0.30,
    # AWS EC2 Capacity Blocks price list: p5.48xlarge (8x H100) $39.33/h, i.e. $4.916 per H100-hour.
    "h100_usd_per_hour": 39.33 / 8,
    # AWS EC2 on-demand: g5.xlarge (1x A10G) $1.006/h; used for one L4/A10G-class GPU.
    "small_gpu_usd_per_hour": 1.006,
    # DeepSeek API price list at R1's launch (deepseek-reasoner): $0.55 / M input (cache miss), $2.19 / M output.
    "r1_usd_per_m_in": 0.55,
    "r1_usd_per_m_out": 2.19,
}
BENCH_PROBLEMS = 500 + 30 + 40 + 675  # MATH500, AIME24, AMC23, OlympiadBench (shipped registry sizes)
LORA_FLOP_SHARE = 4 / 6  # LoRA: forward + activation gradients (~4N FLOPs/token) vs full fine-tuning (~6N)


def fail_fast(wait_s: float) -> tuple[float, float, str]:
    import ray

    from longcot.cluster import JobPlacement, connect
    from longcot.config import parse_job
    from longcot.errors import ResourceError
    from longcot.settings import RayConfig

    connect(RayConfig(num_cpus=2, object_store_memory_mb=256))
    try:

        @ray.remote(num_gpus=1)
        class Student:
            def ready(self) -> bool:
                return True

        started = time.perf_counter()
        actor = Student.remote()
        try:
            ray.get(actor.ready.remote(), timeout=wait_s)
            raise SystemExit("a GPU actor started on this machine: nothing to compare")
        except ray.exceptions.GetTimeoutError:
            ray_pending = time.perf_counter() - started
        ray.kill(actor)

        job = parse_job({"name": "gpu", "train": {"use_gpu": True, "num_workers": 2}})
        started = time.perf_counter()
        try:
            JobPlacement.check(job)
            raise SystemExit("longcot accepted a GPU job on a CPU-only cluster")
        except ResourceError as exc:
            refused = time.perf_counter() - started
            message = str(exc)
    finally:
        ray.shutdown()
    return ray_pending, refused, message


def trace_lengths() -> dict[str, dict[str, float]]:
    from longcot.models import DEFAULT_MODEL, load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    stats = {}
    for path in sorted(TRACES.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.open()]
        lengths = sorted(len(tokenizer(r["response"])["input_ids"]) for r in rows)
        chars = sum(len(r["response"]) for r in rows)
        stats[path.name] = {
            "traces": len(rows),
            "mean": statistics.mean(lengths),
            "p50": lengths[len(lengths) // 2],
            "p90": lengths[int(len(lengths) * 0.9)],
            "max": lengths[-1],
            "chars_per_token": chars / sum(lengths),
        }
    return stats


def plan(mean_tokens: float) -> tuple[list[dict], dict[str, float]]:
    """Tokens, GPU-hours and cost per recipe (see docs/planning.md for every assumption)."""
    a = ANCHORS
    h100_tps = a["h100_32b_output_tps"]
    # Decode is memory-bound: tokens/s scale with bandwidth and inversely with the weights read per token.
    l4_7b_tps = h100_tps * (a["l4_tbps"] / a["h100_tbps"]) * (32.8 / 7.6)
    h100_7b_tps = h100_tps * 32.8 / 7.6
    train_h100_h_per_trace_epoch_32b = a["skyt1_h100_hours"] / (a["skyt1_traces"] * 3)

    def gen_hours(tokens: float, tps: float) -> float:
        return tokens / tps / 3600

    rows = []
    # r1-distill: 20k problems x 1 sample (QwQ-32B), LoRA 32B on ~17k traces x 3 epochs, eval base + student.
    gen = 20_000 * mean_tokens
    train = 17_000 * 3 * train_h100_h_per_trace_epoch_32b * LORA_FLOP_SHARE
    ev = 2 * BENCH_PROBLEMS * mean_tokens
    h100 = gen_hours(gen, h100_tps) + train + gen_hours(ev, h100_tps)
    detail = f"rollouts {gen_hours(gen, h100_tps):.0f} + LoRA-32B {train:.0f} + eval {gen_hours(ev, h100_tps):.1f}"
    api = gen / 1e6 * a["r1_usd_per_m_out"] + 20_000 * 100 / 1e6 * a["r1_usd_per_m_in"]  # ~100-token prompts
    rows.append({"recipe": "r1-distill", "tokens": gen + ev, "h100": h100, "small": 0.0, "detail": detail,
                 "api_alt": api})
    # dlcot-ablation: 6k problems, two 7B LoRA students (raw; DLCoT ~0.7x the tokens) on 5k traces x 3 epochs,
    # three variants evaluated on L4s.
    gen = 6_000 * mean_tokens
    train_7b = 5_000 * 3 * train_h100_h_per_trace_epoch_32b * LORA_FLOP_SHARE * 7.6 / 32.8
    train = train_7b * (1 + 0.7)
    ev = 3 * BENCH_PROBLEMS * mean_tokens
    detail = (f"rollouts {gen_hours(gen, h100_tps):.1f} + 2 LoRA-7B {train:.1f} H100-h; "
              f"eval {gen_hours(ev, l4_7b_tps):.1f} L4-h")
    rows.append({"recipe": "dlcot-ablation", "tokens": gen + ev, "h100": gen_hours(gen, h100_tps) + train,
                 "small": gen_hours(ev, l4_7b_tps), "detail": detail})
    # structure-vs-content at the paper's scale: 17 grid variants + unperturbed + DLCoT trained (LoRA 32B,
    # 5k traces x 3 epochs), those 19 and the base evaluated; teacher traces: 6k problems.
    gen = 6_000 * mean_tokens
    train = 19 * 5_000 * 3 * train_h100_h_per_trace_epoch_32b * LORA_FLOP_SHARE
    ev = 20 * BENCH_PROBLEMS * mean_tokens
    h100 = gen_hours(gen, h100_tps) + train + gen_hours(ev, h100_tps)
    detail = f"rollouts {gen_hours(gen, h100_tps):.1f} + 19 LoRA-32B {train:.0f} + eval {gen_hours(ev, h100_tps):.0f}"
    rows.append({"recipe": "structure-vs-content (cluster)", "tokens": gen + ev, "h100": h100, "small": 0.0,
                 "detail": detail})
    for row in rows:
        row["cost"] = row["h100"] * a["h100_usd_per_hour"] + row["small"] * a["small_gpu_usd_per_hour"]
    return rows, {"l4_7b_tps": l4_7b_tps, "h100_7b_tps": h100_7b_tps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=20.0, help="How long to watch Ray's pending GPU actor.")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    pending, refused, message = fail_fast(args.wait)
    print("== fail fast: a GPU stage on a CPU-only local Ray (2 CPUs)")
    print(f"Ray alone: GPU actor still pending after {pending:.1f}s (it would wait for ever)")
    print(f"longcot preflight: job refused after {refused * 1000:.1f} ms")
    print(f"ratio: > {pending / refused:,.0f}x sooner, and with a reason:\n  {message}")

    print("\n== planning inputs: shipped Sky-T1 traces, embedded tokenizer")
    stats = trace_lengths()
    for name, s in stats.items():
        print(f"{name}: {s['traces']} traces, mean {s['mean']:.0f} tokens, p50 {s['p50']}, p90 {s['p90']}, "
              f"max {s['max']}, {s['chars_per_token']:.2f} chars/token")
    math, aime = stats["math500_sky-t1-27b.jsonl"], stats["aime24_sky-t1-14b.jsonl"]
    # Training problems mix MATH-level and competition-level items; a 16k-token cap bounds the long tail.
    mean_tokens = 0.7 * math["mean"] + 0.3 * min(aime["mean"], 16_384)
    print(f"planning mean: 0.7 x {math['mean']:.0f} + 0.3 x min({aime['mean']:.0f}, 16384) "
          f"= {mean_tokens:.0f} tokens/trace")

    rows, derived = plan(mean_tokens)
    print(f"derived decode rates: 7B on one L4 {derived['l4_7b_tps']:.0f} tok/s, "
          f"7B on one H100 {derived['h100_7b_tps']:.0f} tok/s")
    print("\n| recipe | tokens generated | H100-hours | L4-hours | rough cost (USD) | breakdown |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['recipe']} | {r['tokens'] / 1e6:.0f} M | {r['h100']:.0f} | {r['small']:.0f} | "
              f"{r['cost']:,.0f} | {r['detail']} |")
    print(f"r1-distill rollouts through the DeepSeek-R1 API instead: ${rows[0]['api_alt']:,.0f} (launch prices)")


if __name__ == "__main__":
    main()
