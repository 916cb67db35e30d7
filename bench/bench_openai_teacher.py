"""Benchmark of the ``openai`` backend against a slow, flaky remote teacher at volume (issue 21, item 3).

A local OpenAI-compatible server (``tests/flaky_teacher.py``) behaves like a remote reasoning API: log-normal
latencies with a far tail, 429s with ``Retry-After`` (or ``retry-after-ms``), 5xx, connections shut half way
through an answer, ``reasoning_content`` beside every answer. It logs every arrival. Measured side by side
in one run, each variant on a fresh server with ``--requests`` problems (one sample each):

(a) ``client``: ``OpenAIClient.generate`` on all the prompts in one call, no Ray: what the client itself
    does with its rate limit.
(b) ``stage``: ``longcot generate`` as a user runs it (CLI in a subprocess, its driver attached to a local
    Ray started here): 2 actors (the qps shared out between them), each running ``max_in_flight /
    batch_size + 1`` batches at once on threads that share its client; ``batch_size`` = ``max_in_flight``;
    killed with SIGKILL once ``--kill-at`` of the requests are answered, then run again to completion on
    the same output.
(c) ``stage+cache``: the same with batches of 4 (so a slow answer holds back only its own small batch)
    and ``response_cache`` set, so answers received but not yet written at the kill are not paid for again.

Reported per variant: the request rate while there were requests to send (arrivals over the span from
first to last arrival) against the configured ``qps`` (target >= 90%); answers per second over the whole
window (last answer included, so the far tail of the last requests counts); records lost (expected ids not
in the output); duplicate ids in the output; requests the teacher answered twice; Retry-After compliance
(every 429 followed by another arrival of the same request: the gap, less what was asked; negative = early);
what the resumed run sent again (requests of records already written; requests answered before the kill
whose batch was not written yet).

    .venv/bin/python bench/bench_openai_teacher.py [--requests 2000] [--qps 25] [--kill-at 0.4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--qps", type=float, default=25.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--stage-batch-size", type=int, help="batch_size of the stage variant (default: "
                        "max_in_flight, so one batch can fill the client's threads)")
    parser.add_argument("--kill-at", type=float, default=0.4, help="kill the first run once this share is answered")
    parser.add_argument("--variants", default="client,stage,stage+cache")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from flaky_teacher import Weather

    from longcot.cluster import connect
    from longcot.settings import RayConfig

    weather = Weather()
    print(f"teacher: {weather}", flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    connect(RayConfig(num_cpus=2, object_store_memory_mb=512))
    import ray

    address = ray.get_runtime_context().gcs_address
    results = {}
    for variant in args.variants.split(","):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"bench-teacher-{variant.replace('+', '-')}-") as tmp:
            if variant == "client":
                results[variant] = run_client(Path(tmp), weather, args)
            else:
                results[variant] = run_stage(Path(tmp), weather, args, address, small=variant == "stage+cache")
        results[variant]["bench_wall_s"] = round(time.monotonic() - started, 1)
        print(f"\n{variant}: {json.dumps(results[variant])}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def stage_settings(args, *, small: bool, cache: Path | None) -> dict:
    """The generate settings of both stage variants: the same limits, the batch shape each needs."""
    openai = {"qps": args.qps, "max_in_flight": args.max_in_flight, "api_key_env": None, "max_retries": 8,
              "backoff_s": 0.5, "max_backoff_s": 30, "timeout_s": 60}
    if cache is not None:
        openai["response_cache"] = str(cache)
    return {"model": "teacher", "concurrency": 2, "resources": {"num_cpus": 0.5},
            "batch_size": 4 if small else (args.stage_batch_size or args.max_in_flight),
            "sampling": {"max_tokens": 256, "temperature": 0.6}, "system_prompt": "", "openai": openai}


def run_client(tmp: Path, weather, args) -> dict:
    from flaky_teacher import FlakyTeacher, tally

    from longcot.generate.config import OpenAISettings
    from longcot.generate.openai import OpenAIClient

    prompts = [json.dumps([{"role": "user", "content": f"Problem {i:05d}: what is {i} + {i}?"}])
               for i in range(args.requests)]
    with FlakyTeacher(weather) as teacher:
        settings = OpenAISettings(base_url=teacher.url, qps=args.qps, max_in_flight=args.max_in_flight, max_retries=8,
                                  backoff_s=0.5, max_backoff_s=30, timeout_s=60)
        client = OpenAIClient(settings, "teacher")
        out = client.generate(prompts, max_tokens=256, temperature=0.6, seed=list(range(len(prompts))))
        client.close()
        events = teacher.events()
    t = tally(events)
    return {**rates([events], args.qps), "records_in": len(prompts), "records_out": len(out),
            "lost": len(prompts) - len(out), "errors": sum(o.finish_reason == "error" for o in out),
            "duplicate_ids": 0, **teacher_side(t)}


def run_stage(tmp: Path, weather, args, address: str, *, small: bool) -> dict:
    from flaky_teacher import (FlakyTeacher, generate_argv, key_of_record, resent_after_resume, run_generate,
                               split_at, tally, wait_for_workers_gone, write_problems)

    from longcot.recordfiles import load_records

    problems = write_problems(tmp / "problems.jsonl", args.requests)
    output = tmp / "samples.jsonl"
    settings = stage_settings(args, small=small, cache=tmp / "cache" if small else None)
    with FlakyTeacher(weather) as teacher:
        argv = generate_argv(problems, output, tmp / "runs", teacher.url, settings)
        target = args.kill_at * args.requests

        def enough_answered() -> bool:
            return sum(e.outcome == "answered" for e in teacher.events()) >= target

        first = run_generate(argv, ray_address=address, kill_when=enough_answered)
        if not first.killed:
            raise RuntimeError(f"the first run ended (rc {first.returncode}) before the kill:\n{first.stderr[-3000:]}")
        wait_for_workers_gone()
        committed = {key_of_record(r) for r in load_records(output)} if output.exists() else set()
        resumed_at = time.monotonic()
        second = run_generate(argv, ray_address=address)
        if second.returncode != 0:
            raise RuntimeError(f"the resumed run failed:\n{second.stderr[-3000:]}")
        events = teacher.events()
    before, after = split_at(events, resumed_at)
    rows = load_records(output)
    ids = [r["id"] for r in rows]
    rejected = tmp / "samples.rejected.jsonl"
    n_rejected = sum(1 for _ in rejected.open()) if rejected.exists() else 0
    t = tally(events)
    resent = resent_after_resume(before, after, committed)
    # answers the teacher sent after the driver's SIGKILL reached workers that were being torn down
    late = {e.key for e in before if e.outcome == "answered" and e.replied >= first.killed_at}
    return {
        **rates([before, after], args.qps),
        "first_run": {"killed": first.killed, "seconds": round(first.seconds, 1)},
        "resumed_run_s": round(second.seconds, 1),
        "records_in": args.requests, "records_out": len(set(ids)), "rejected": n_rejected,
        "lost": args.requests - len(set(ids)) - n_rejected,
        "errors": sum(r["finish_reason"] == "error" for r in rows),
        "duplicate_ids": len(ids) - len(set(ids)),
        **teacher_side(t),
        **resent,
        "answered_after_kill": len(late),
        "answered_resent_answered_after_kill": len(late & {e.key for e in after}),
    }


def rates(phases: list[list], qps: float) -> dict:
    """Request rate while sending (arrival span) and answers per second (whole window), over the runs."""
    arrivals = span = answered = window = 0.0
    for phase in phases:
        if not phase:
            continue
        times = sorted(e.arrived for e in phase)
        arrivals += len(times)
        span += times[-1] - times[0]
        answered += sum(e.outcome == "answered" for e in phase)
        # to the last answer: a killed run's late replies to workers that are gone do not count
        window += max((e.replied for e in phase if e.outcome == "answered"), default=times[-1]) - times[0]
    timeline = [per_bin(phase, 5.0) for phase in phases if phase]
    return {"arrivals_per_5s": timeline, "request_rate": round(arrivals / span, 2), "request_rate_ratio": round(arrivals / span / qps, 3),
            "answers_per_s": round(answered / window, 2), "answers_ratio": round(answered / window / qps, 3),
            "sending_s": round(span, 1), "window_s": round(window, 1)}


def per_bin(events, seconds: float) -> list[int]:
    """Arrivals in consecutive bins of ``seconds`` from the first: the gaps show a run waiting on stragglers."""
    first = min(e.arrived for e in events)
    counts: dict[int, int] = {}
    for event in events:
        b = int((event.arrived - first) // seconds)
        counts[b] = counts.get(b, 0) + 1
    return [counts.get(i, 0) for i in range(max(counts) + 1)]


def teacher_side(t: dict) -> dict:
    return {key: (round(value, 3) if isinstance(value, float) else value) for key, value in t.items()
            if key in ("arrivals", "answered", "rate_limited", "server_error", "dropped", "unwritten",
                       "keys_answered_twice", "peak_1s", "retry_after_checked", "retry_after_early",
                       "retry_after_min_margin_s")}


def print_table(results: dict, args) -> None:
    names = list(results)
    rows = [
        ("request rate / qps (target >= 0.90)", "request_rate_ratio"),
        ("answers/s / qps (whole window)", "answers_ratio"),
        ("records lost (target 0)", "lost"),
        ("error records", "errors"),
        ("duplicate ids in the output", "duplicate_ids"),
        ("requests answered twice", "keys_answered_twice"),
        ("429s checked / came back early", None),
        ("smallest Retry-After margin (s)", "retry_after_min_margin_s"),
        ("records written at the kill", "committed"),
        ("  of them sent again (target 0)", "committed_resent"),
        ("answered, not yet written at the kill", "answered_uncommitted"),
        ("  of them sent again (target 0)", "answered_resent"),
        ("    answered after the SIGKILL (in transit)", "answered_resent_answered_after_kill"),
        ("peak arrivals in 1 s", "peak_1s"),
        ("arrivals (429/5xx/dropped)", None),
    ]
    print(f"\n{args.requests} requests, qps {args.qps:g}, max_in_flight {args.max_in_flight}, stage batch_size "
          f"{args.stage_batch_size or args.max_in_flight}, stage+cache batch_size 4 with response_cache")
    print("| | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for label, key in rows:
        cells = []
        for name in names:
            r = results[name]
            if label.startswith("429s"):
                cells.append(f"{r['retry_after_checked']} / {r['retry_after_early']}")
            elif label.startswith("arrivals"):
                cells.append(f"{r['arrivals']} ({r['rate_limited']}/{r['server_error']}/{r['dropped']})")
            else:
                cells.append(str(r.get(key, "-")))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
