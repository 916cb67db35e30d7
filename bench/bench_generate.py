"""Generation side by side in one run, on the same GSM8K prompts (the reasoning system prompt), greedy:

- plain transformers ``model.generate`` on the whole batch, fp32 and bf16, with transformers' default KV cache (the
  floor the engines are held to; the hf engine writes its cache in place, so the two differ by that too);
- the hf backend's engine (``HFGenerator``) in this process, fp32 and bf16, and bf16 with its weights not laid out for
  oneDNN (``packed=False``: what ``onednn.PackedLinear`` adds);
- the llamacpp backend's engine (``LlamaCppGenerator``) on the embedded model's GGUF file, its weights as
  shipped (Q4_1), as bf16 (the backend's default) and as q4_0, all prompts as parallel sequences, and bf16 one
  prompt at a time (when llama-cpp-python is installed);
- the whole generate stage (``generate_records``: Ray Data actor, model load, committed chunks) per backend,
  with the stage's own time per phase.

Reported per variant: model load, time to first token (seconds until every prompt of the batch has its first
token: a ``max_tokens=1`` call), output tokens/s (model load excluded), and agreement: the share of greedy
outputs identical to plain transformers fp32's, and to its bf16's. The machine's load average is printed with
every row. On a shared machine wall time follows the neighbours' load, so the in-process rows also give the
process's CPU seconds and tokens per CPU second, which the neighbours move much less (threads that spin while
waiting for a core still count).

    .venv/bin/python bench/bench_generate.py [--prompts 16] [--max-tokens 128] [--threads 2] [--skip-stage]
        [--llama-weights as_stored,bf16,q4_0] [--stage-llama-weights bf16]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class PlainTransformers:
    """``model.generate`` on one padded batch, nothing else: what an engine adds is measured against this."""

    def __init__(self, model: str, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM

        from longcot.generate.hf import torch_thread
        from longcot.models import load_tokenizer, resolve

        # on the engines' thread, as its generation is: a second thread calling torch would give OpenMP a second
        # team of threads on the same cores and slow every row after it (``longcot.generate.hf.torch_thread``)
        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.model = torch_thread().submit(AutoModelForCausalLM.from_pretrained, resolve(model),
                                           dtype=getattr(torch, dtype)).result().eval()

    def generate(self, prompts: list[str], *, max_tokens: int) -> list[tuple[str, int]]:
        from longcot.generate.hf import on_torch_thread

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = on_torch_thread(self.model.generate, **enc, max_new_tokens=max_tokens, do_sample=False,
                              pad_token_id=self.tokenizer.pad_token_id, temperature=None, top_p=None,
                              top_k=None).result()
        width = enc["input_ids"].shape[1]
        eos = self.model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        texts = []
        for row in out[:, width:].tolist():
            end = next((k for k, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            texts.append((self.tokenizer.decode(kept, skip_special_tokens=True), len(row) if end is None else end + 1))
        return texts


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def measure(name: str, build, run, prompts: list[str], max_tokens: int, reference: list[str] | None, table: list,
            bf16: list[str] | None = None):
    """Build an engine, time its first token and its whole batch; one row of ``table``. Returns its texts.
    ``reference``: plain transformers fp32's texts; ``bf16``: plain transformers bf16's (a second agreement)."""
    t0 = time.perf_counter()
    engine = build()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(engine, prompts, 1)
    ttft = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    outs = run(engine, prompts, max_tokens)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    texts = [t for t, _ in outs]
    tokens = sum(n for _, n in outs)
    def agreement(other):
        return "-" if other is None else f"{sum(a == b for a, b in zip(texts, other))}/{len(texts)}"

    table.append((name, f"{load_s:.1f}", f"{ttft:.2f}", f"{tokens}", f"{seconds:.1f}", f"{tokens / seconds:.1f}",
                  f"{cpu:.1f}", f"{tokens / cpu:.1f}", agreement(reference), agreement(bf16), load()))
    print(" | ".join(table[-1]), flush=True)
    del engine
    return texts


def run_engine(engine, prompts, max_tokens):
    return [(c.text, c.output_tokens) for c in engine.generate(prompts, max_tokens=max_tokens)]


def run_one_at_a_time(engine, prompts, max_tokens):
    if max_tokens == 1:  # the first prompt's first token: nothing waits on the others
        return run_engine(engine, prompts[:1], 1)
    return [o for p in prompts for o in run_engine(engine, [p], max_tokens)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads; the stage's actor CPUs")
    parser.add_argument("--skip-stage", action="store_true", help="leave out the whole-stage rows")
    parser.add_argument("--llama-weights", default="as_stored,bf16,q4_0",
                        help="llama.cpp engine rows, one per weight format (generate.llamacpp.weights)")
    parser.add_argument("--stage-llama-weights", default="bf16", help="llamacpp whole-stage rows, one per format")
    args = parser.parse_args()

    import torch

    from longcot.generate.config import GenerateConfig
    from longcot.generate.hf import HFGenerator
    from longcot.generate.prompting import render_prompt
    from longcot.generate.samples import messages_for
    from longcot.models import DEFAULT_MODEL, cpu_has_bf16, load_tokenizer, resolve
    from longcot.problems.benchmarks import get_benchmark, iter_problems

    torch.set_num_threads(args.threads)
    resolve(DEFAULT_MODEL)
    config = GenerateConfig(batch_size=args.prompts, sampling={"n": 1, "max_tokens": args.max_tokens},
                            resources={"num_cpus": args.threads})
    problems = list(iter_problems(get_benchmark("gsm8k"), limit=args.prompts))
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    prompts = [render_prompt(tokenizer, messages_for(p, config)) for p in problems]
    n_prompt = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    have_llama = importlib.util.find_spec("llama_cpp") is not None
    print(f"{len(prompts)} GSM8K prompts ({n_prompt} prompt tokens), greedy, {args.max_tokens} new tokens, "
          f"threads {args.threads}, native bf16: {cpu_has_bf16()}, llama_cpp installed: {have_llama}")
    print("variant | load s | TTFT s | output tokens | s | output tok/s | CPU s | tok per CPU s | identical to fp32 "
          "| identical to bf16 | load avg")
    table: list = []
    ref = measure("plain transformers fp32", lambda: PlainTransformers(DEFAULT_MODEL, "float32"),
                  lambda e, p, m: e.generate(p, max_tokens=m), prompts, args.max_tokens, None, table)
    ref_bf16 = measure("plain transformers bf16", lambda: PlainTransformers(DEFAULT_MODEL, "bfloat16"),
                       lambda e, p, m: e.generate(p, max_tokens=m), prompts, args.max_tokens, ref, table)
    for dtype in ("float32", "bfloat16"):
        measure(f"hf engine {dtype} (batch {args.prompts})",
                lambda: HFGenerator(DEFAULT_MODEL, batch_size=args.prompts, threads=args.threads, dtype=dtype),
                run_engine, prompts, args.max_tokens, ref, table, ref_bf16)
    # what laying the bf16 weights out once for oneDNN (onednn.PackedLinear) adds: the same engine without it
    measure(f"hf engine bfloat16 (batch {args.prompts}), weights not packed",
            lambda: HFGenerator(DEFAULT_MODEL, batch_size=args.prompts, threads=args.threads, dtype="bfloat16",
                                packed=False),
            run_engine, prompts, args.max_tokens, ref, table, ref_bf16)
    measure("hf engine bf16, one at a time",
            lambda: HFGenerator(DEFAULT_MODEL, batch_size=1, threads=args.threads, dtype="bfloat16"),
            run_one_at_a_time, prompts, args.max_tokens, ref, table, ref_bf16)
    if have_llama:
        from longcot.generate.backends import make_backend
        from longcot.generate.llamacpp import LlamaCppGenerator

        gguf = make_backend(GenerateConfig(backend="llamacpp")).gguf()
        for weights in args.llama_weights.split(","):  # e.g. as the shipped Q4_1 file, the default bf16, 4-bit again
            measure(f"llama.cpp engine {weights}, {args.prompts} parallel sequences",
                    lambda weights=weights: LlamaCppGenerator(DEFAULT_MODEL, gguf=gguf, weights=weights,
                                                              sequences=args.prompts, threads=args.threads),
                    run_engine, prompts, args.max_tokens, ref, table, ref_bf16)
        measure("llama.cpp engine bf16, one at a time",
                lambda: LlamaCppGenerator(DEFAULT_MODEL, gguf=gguf, weights="bf16", sequences=1, threads=args.threads),
                run_one_at_a_time, prompts, args.max_tokens, ref, table, ref_bf16)
    if not args.skip_stage:
        stage_rows(problems, args, have_llama, ref)


def stage_rows(problems: list[dict], args, have_llama: bool, reference: list[str]) -> None:
    """The whole generate stage per backend on the same problems, Ray's own start excluded."""
    import json

    import ray

    from longcot.cluster import connect
    from longcot.generate.config import GenerateConfig
    from longcot.generate.stage import generate_records
    from longcot.settings import RayConfig

    t0 = time.perf_counter()
    connect(RayConfig(num_cpus=args.threads, object_store_memory_mb=512))
    print(f"\nthe whole stage (Ray start {time.perf_counter() - t0:.1f}s, not counted); phases in seconds")
    variants = [("hf fp32 (the old CPU default)", {"backend": "hf", "hf": {"dtype": "float32"}}),
                ("hf auto (bf16 here)", {"backend": "hf"})]
    if have_llama:
        variants += [(f"llamacpp {w}", {"backend": "llamacpp", "llamacpp": {"weights": w}})
                     for w in args.stage_llama_weights.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    print("stage | seconds | output tok/s | identical to fp32 | phases | load avg")
    for name, settings in variants:
        config = GenerateConfig(batch_size=args.prompts, sampling={"n": 1, "max_tokens": args.max_tokens},
                                resources={"num_cpus": args.threads}, **settings)
        out = work / f"{settings['backend']}-{len(os.listdir(work))}.jsonl"
        t0 = time.perf_counter()
        result = generate_records(problems, config, output_path=out, rejected_path=work / "rej.jsonl",
                                  progress=False, echo=False)
        seconds = time.perf_counter() - t0
        by_id = {r["problem_id"]: r["response"] for r in map(json.loads, out.open())}
        texts = [by_id[p["problem_id"]] for p in problems]
        same = sum(a == b for a, b in zip(texts, reference))
        phases = ", ".join(f"{k} {v:.1f}" for k, v in result.summary["phases"].items())
        print(f"{name} | {seconds:.1f} | {result.summary['output_tokens'] / seconds:.1f} | {same}/{len(texts)} | "
              f"{phases} | {load()}", flush=True)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
