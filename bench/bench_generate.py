"""Benchmark of the generate stage's hf backend, measured side by side in one run on the same prompts.

(a) batched vs one prompt at a time: ``HFGenerator.generate`` with ``batch_size`` prompts per forward
    pass against a loop of single-prompt calls. Reported: output tokens/s of each and the ratio (target >= 3x).
(b) the whole Ray Data stage (``generate_records``: an actor pool of one 1-CPU actor, committed chunks,
    progress, summary) against a plain Python loop over the same batched generator writing the same
    records (``complete_rows``). Both include loading the model; Ray's own start-up is excluded and
    printed apart. Reported: the overhead (target <= 15%).

Greedy decoding, so every variant produces the same tokens. Every variant uses ``--threads`` torch
threads (default 2, the laptop's cores), and the stage's one actor asks Ray for as many CPUs.

    .venv/bin/python bench/bench_generate.py [--problems 48] [--compare-prompts 16] [--max-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compare-prompts", type=int, default=16,
                        help="(a) compares batched with one-at-a-time on the first this many prompts")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of every variant; the stage's actor asks Ray for as many CPUs")
    args = parser.parse_args()

    import torch

    import ray

    from longcot.cluster import connect
    from longcot.generate.config import GenerateConfig
    from longcot.generate.hf import HFGenerator
    from longcot.generate.prompting import render_prompt
    from longcot.generate.samples import complete_rows, expand_samples, messages_for
    from longcot.generate.stage import generate_records
    from longcot.models import DEFAULT_MODEL, resolve
    from longcot.problems.benchmarks import get_benchmark, iter_problems
    from longcot.recordfiles import RecordWriter
    from longcot.settings import RayConfig

    torch.set_num_threads(args.threads)
    resolve(DEFAULT_MODEL)
    config = GenerateConfig(batch_size=args.batch_size, sampling={"n": 1, "max_tokens": args.max_tokens},
                            resources={"num_cpus": args.threads})
    problems = list(iter_problems(get_benchmark("gsm8k"), limit=args.problems))

    # (a) batched vs one at a time, same generator and prompts
    t0 = time.perf_counter()
    gen = HFGenerator(DEFAULT_MODEL, batch_size=args.batch_size, threads=args.threads)
    load_s = time.perf_counter() - t0
    rows = [{**s, "prompt": render_prompt(gen.tokenizer, messages_for(p, config))}
            for p in problems for s in expand_samples(p, 1)]
    prompts = [r["prompt"] for r in rows][: args.compare_prompts]
    t0 = time.perf_counter()
    batched = gen.generate(prompts, max_tokens=args.max_tokens)
    batched_s = time.perf_counter() - t0
    single_gen = HFGenerator(DEFAULT_MODEL, batch_size=1, threads=args.threads)
    t0 = time.perf_counter()
    single = [single_gen.generate([p], max_tokens=args.max_tokens)[0] for p in prompts]
    single_s = time.perf_counter() - t0
    del single_gen
    tok_b = sum(c.output_tokens for c in batched)
    tok_s = sum(c.output_tokens for c in single)
    same = sum(a.text == b.text for a, b in zip(batched, single))
    print(f"(a) on {len(prompts)} of the {len(rows)} prompts; (b) on all of them")
    print(f"prompts: GSM8K, max_tokens {args.max_tokens}, greedy, batch {args.batch_size}, "
          f"torch threads {args.threads}; model load {load_s:.1f}s")
    print(f"(a) batched:        {tok_b} tokens in {batched_s:7.1f}s = {tok_b / batched_s:7.1f} output tok/s")
    print(f"    one at a time:  {tok_s} tokens in {single_s:7.1f}s = {tok_s / single_s:7.1f} output tok/s")
    print(f"    ratio batched / one-at-a-time: {(tok_b / batched_s) / (tok_s / single_s):.2f}x  "
          f"(same text for {same}/{len(prompts)} prompts)", flush=True)

    # (b) plain loop over the batched generator (with model load and writing) vs the whole Ray Data stage
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    t0 = time.perf_counter()
    loop_gen = HFGenerator(DEFAULT_MODEL, batch_size=args.batch_size, threads=args.threads)
    with RecordWriter(work / "loop.jsonl", append=False) as writer:
        for i in range(0, len(rows), args.batch_size):
            writer.write(complete_rows(rows[i : i + args.batch_size], loop_gen, config.sampling,
                                       model=config.model, detail={"backend": "hf"}))
    loop_s = time.perf_counter() - t0
    del loop_gen

    print(f"(b) plain loop over batched generator: {loop_s:7.1f}s", flush=True)
    t0 = time.perf_counter()
    connect(RayConfig(num_cpus=2, object_store_memory_mb=512))
    ray_start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = generate_records(problems, config, output_path=work / "stage.jsonl", rejected_path=work / "rej.jsonl",
                              progress=False, echo=False)
    stage_s = time.perf_counter() - t0
    ray.shutdown()
    assert result.summary["generated"] == len(rows)
    shutil.rmtree(work, ignore_errors=True)

    print(f"    Ray Data stage (1 actor, {args.threads} CPU):   {stage_s:7.1f}s  (+ Ray start {ray_start_s:.1f}s, not counted)")
    print(f"    stage overhead: {100 * (stage_s - loop_s) / loop_s:+.1f}%")


if __name__ == "__main__":
    main()
