"""Serving on CPU, measured side by side in one run (embedded SmolLM2-135M, greedy):

1. latency: the same chat request through the endpoint (HTTP -> Serve proxy -> replica -> HFGenerator)
   against direct in-process ``HFGenerator.generate`` (one torch thread each, as a 1-CPU replica has);
   target: endpoint overhead <= 15%.
2. throughput: 8 concurrent clients, each sending requests back to back, against the endpoint with
   dynamic batching (max_batch_size 8) and against the same endpoint without it (max_batch_size 1);
   target: batched >= 2x the completion tokens per second.

    .venv/bin/python bench/bench_serve.py [--rounds 5] [--tokens 32] [--requests-per-client 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import socket
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

LATENCY_QUESTION = "Write a long story about a robot who learns to paint."  # runs to max_tokens
QUESTIONS = [
    "What is 17 plus 25?", "Name three primary colors.", "What is the capital of Italy?", "Why is the sky blue?",
    "How many legs does a spider have?", "What is 9 times 8?", "Write a haiku about rain.", "What is a prime number?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="latency repetitions (median reported)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of every request")
    parser.add_argument("--requests-per-client", type=int, default=3)
    args = parser.parse_args()

    import httpx
    import ray
    import torch
    from ray import serve

    from longcot.cluster import connect
    from longcot.generate.hf import HFGenerator
    from longcot.generate.prompting import render_prompt
    from longcot.models import DEFAULT_MODEL
    from longcot.serve.config import ServeConfig
    from longcot.serve.endpoint import build_app
    from longcot.settings import RayConfig

    torch.set_num_threads(1)  # what a replica with num_cpus=1 gets (Ray sets OMP_NUM_THREADS=1)
    port = free_port()
    connect(RayConfig(num_cpus=2, object_store_memory_mb=256))
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = {"model": DEFAULT_MODEL, "port": port, "resources": {"num_cpus": 1}}
        batched = ServeConfig(**base, batching={"max_batch_size": 8})
        unbatched = ServeConfig(**base, batching={"max_batch_size": 1})
        t0 = time.perf_counter()
        serve.run(build_app(batched.model_dump()), name="batched", route_prefix="/batched")
        serve.run(build_app(unbatched.model_dump()), name="unbatched", route_prefix="/unbatched")
        print(f"endpoints up in {time.perf_counter() - t0:.1f}s", flush=True)
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(timeout=600)

        def ask(app: str, question: str) -> dict:
            body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": question}],
                    "max_tokens": args.tokens, "temperature": 0}
            response = http.post(f"{url}/{app}/v1/chat/completions", json=body)
            response.raise_for_status()
            return response.json()

        # 1. latency, endpoint vs in-process, alternating so both see the same background load
        direct = HFGenerator(DEFAULT_MODEL, device="cpu")
        prompt = render_prompt(direct.tokenizer, [{"role": "user", "content": LATENCY_QUESTION}])
        ask("batched", LATENCY_QUESTION)  # warm both paths
        reference = direct.generate([prompt], max_tokens=args.tokens)[0]
        lat_endpoint, lat_direct = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            served = ask("batched", LATENCY_QUESTION)
            lat_endpoint.append(time.perf_counter() - t)
            t = time.perf_counter()
            local = direct.generate([prompt], max_tokens=args.tokens)[0]
            lat_direct.append(time.perf_counter() - t)
        assert served["choices"][0]["message"]["content"] == local.text.strip(), "endpoint and direct disagree"
        assert served["usage"]["completion_tokens"] == reference.output_tokens
        med_e, med_d = statistics.median(lat_endpoint), statistics.median(lat_direct)
        print(f"\nlatency, one request of {reference.output_tokens} tokens (median of {args.rounds}):")
        print(f"  direct in-process  {med_d * 1000:8.0f} ms")
        print(f"  endpoint           {med_e * 1000:8.0f} ms")
        print(f"  overhead           {(med_e / med_d - 1) * 100:+8.1f} %   (target <= +15%)")

        # 2. throughput with 8 concurrent clients, batched vs unbatched
        def load(app: str) -> tuple[float, int]:
            def client(i: int) -> int:
                return sum(ask(app, QUESTIONS[(i + k) % len(QUESTIONS)])["usage"]["completion_tokens"]
                           for k in range(args.requests_per_client))

            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                tokens = sum(pool.map(client, range(8)))
            return time.perf_counter() - t, tokens

        ask("unbatched", QUESTIONS[0])
        results = {}
        for app in ("unbatched", "batched"):
            seconds, tokens = load(app)
            results[app] = tokens / seconds
            health = http.get(f"{url}/{app}/health").json()["batching"]
            print(f"\n{app}: {tokens} completion tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s "
                  f"({8 * args.requests_per_client} requests; batches so far {health['batches']}, "
                  f"largest {health['largest']})")
        print(f"\nload average (1/5/15 min) at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs")
        print(f"\nthroughput ratio batched/unbatched: {results['batched'] / results['unbatched']:.2f}x   (target >= 2x)")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
