"""What bf16 changes against fp32, measured with the eval stage's own functions on the quickstart's held-out
problems, in this process (a shared machine starves Ray's niced workers; the figures here do not depend on
speed).

For the base model (and, with ``--adapter``, the quickstart's student), in float32 and in bfloat16, as the
quickstart's eval runs them (its ``eval:`` block: the student's prompt from its card, greedy, 384 new tokens,
batch 16): the greedy answers (``HFGenerator`` through the generate stage's ``complete_rows``), verified by the
verify stage (pass@1, structure_rate through ``score_variants``), and the held-out teacher traces scored
(``trace_nlls``, formatted by ``nll_settings`` as the eval stage formats them). Reported per model: the share
of bf16 answers identical to fp32's and how much of each answer they share before they part, pass@1,
structure_rate and heldout_nll in each dtype, and the generation's time and CPU time.

    .venv/bin/python bench/bench_dtype.py --run-train-dir RUN/train [--no-student] [--limit 16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "bfloat16")


def shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def unseen_traces(path: Path, card, held: list[dict], count: int) -> list[dict]:
    """The teacher traces of ``count`` problems of ``path`` that are neither held out nor trained on."""
    from longcot.generate.samples import as_problem
    from longcot.recordfiles import load_records

    taken = {p["problem_id"] for p in held}
    out: list[dict] = []
    for row in load_records(path):
        pid = as_problem(row)["problem_id"]
        if pid in taken or (card is not None and card.overlap([as_problem(row)])):
            continue
        taken.add(pid)
        out.append(row)
        if len(out) == count:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-train-dir", required=True, help="a quickstart run's train/ (heldout.jsonl, adapter/)")
    parser.add_argument("--no-student", action="store_true", help="the base model only")
    parser.add_argument("--limit", type=int, default=None, help="the first this many held-out problems")
    parser.add_argument("--more", type=int, default=0,
                        help="this many more problems the student never trained on, from the run's dlcot output "
                             "(a larger sample for the greedy measures than the 16 held out)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["base", "student"], help="one model only (fp32 and bf16 still both run)")
    args = parser.parse_args()

    import torch
    import yaml

    from longcot.eval.config import EvalConfig
    from longcot.eval.heldout import per_token, trace_examples, trace_nlls
    from longcot.eval.metrics import score_variants
    from longcot.eval.stage import (eval_prompt, generate_config_for, heldout_problems, nll_settings, refuse_trained,
                                    student_of)
    from longcot.generate.backends import make_backend
    from longcot.generate.hf import HFGenerator
    from longcot.generate.samples import complete_rows, expand_samples, messages_for
    from longcot.models import load_tokenizer
    from longcot.recordfiles import load_records
    from longcot.verify import verify_records

    torch.set_num_threads(args.threads)
    train = Path(args.run_train_dir)
    settings = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())["eval"]
    settings["heldout"]["records"] = str(train / "heldout.jsonl")
    settings["models"] = [{"name": "base", "model": "embedded:smollm2-135m-instruct"},
                          {"name": "student", "model": "embedded:smollm2-135m-instruct", "adapter": str(train / "adapter")}]
    config = EvalConfig.model_validate(settings)
    card, _ = student_of(config.models, config)  # every model is prompted as the student was trained
    if args.no_student or args.only:
        keep = [m for m in config.models if m.name == (args.only or "base")]
        config = config.model_copy(update={"models": keep})
    prompt = eval_prompt(card, config)
    traces = load_records(config.heldout.records)
    problems = heldout_problems(traces, args.limit)
    if args.more:
        traces = traces + unseen_traces(train.parent / "dlcot" / "records.jsonl", card, problems, args.more)
        problems = heldout_problems(traces, None)
        refuse_trained(card, problems)
    data = nll_settings(card, prompt, config)
    print(f"{len(problems)} held-out problems of {config.heldout.records}; prompt: "
          f"{'the student card' if prompt else 'eval.generate'}; max_tokens {config.generate.sampling.max_tokens}, "
          f"greedy, batch {config.generate.batch_size}, threads {args.threads}")
    print("| model | dtype | generate s | CPU s | output tokens | identical to fp32 | shared prefix | pass@1 | "
          "structure_rate | heldout_nll | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for index, entry in enumerate(config.models):
        answers: dict[str, list[dict]] = {}
        for dtype in DTYPES:
            gen = generate_config_for(entry, config, index, prompt)
            gen = gen.model_copy(update={"hf": gen.hf.model_copy(update={"dtype": dtype})})
            backend = make_backend(gen)
            rows = [{**s, "prompt": backend.render(messages_for(p, gen))}
                    for p in problems for s in expand_samples(p, 1)]
            engine = HFGenerator(gen.model, adapter=gen.hf.adapter, dtype=dtype, batch_size=gen.batch_size,
                                 threads=args.threads)
            t0, c0 = time.perf_counter(), time.process_time()
            done = complete_rows(rows, engine, gen.sampling, model=gen.model, detail=backend.describe())
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            answers[dtype] = done
            score = score_variants({entry.name: verify_records(done, config.verify)}, config.k,
                                   markers=card.markers if card else None)[0]
            examples, _ = trace_examples(traces, data, load_tokenizer(gen.model, padding_side="right"))
            nll = per_token(trace_nlls(engine.model, examples))
            ref = answers["float32"]
            same = sum(a["response"] == b["response"] for a, b in zip(ref, done))
            prefix = sum(shared_prefix(a["response"] or "", b["response"] or "") for a, b in zip(ref, done))
            whole = sum(len(a["response"] or "") for a in ref)
            tokens = sum(r["output_tokens"] for r in done)
            print(f"| {entry.name} | {dtype} | {seconds:.1f} | {cpu:.1f} | {tokens} | "
                  f"{'reference' if dtype == 'float32' else f'{same}/{len(done)}'} | "
                  f"{'-' if dtype == 'float32' else f'{prefix / whole:.2f}'} | {score.pass_at_1:.3f} | "
                  f"{score.structure_rate:.2f} | {nll:.4f} | {os.getloadavg()[0]:.1f} |", flush=True)
            del engine


if __name__ == "__main__":
    main()
