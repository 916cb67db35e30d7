"""DLCoT rules-mode throughput against its floor: tokenizing the same traces with the student's tokenizer.

Both run side by side in one process on the 530 shared traces (math500 + aime24), after warm-up (tokenizer
loaded, checker pool started): the floor is one batch tokenization of every response; DLCoT is the whole
transform (parse, answer checks, segmentation, clustering, simplification, reassembly, token counts before
and after) over the same records in batches of 32. Target: DLCoT <= 3x the floor.

    .venv/bin/python bench/bench_dlcot.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
TRACES = [REPO / "jobs/data/traces/math500_sky-t1-27b.jsonl", REPO / "jobs/data/traces/aime24_sky-t1-14b.jsonl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Timed rounds of each, interleaved (medians reported).")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from longcot.dlcot.config import DlcotConfig
    from longcot.dlcot.traces import read_traces
    from longcot.dlcot.transform import DlcotTransform
    from longcot.models import load_tokenizer

    config = DlcotConfig()
    rows = [r for path in TRACES for r in read_traces(path, config.fields) if isinstance(r, dict)]
    transform = DlcotTransform(config)
    tokenizer = load_tokenizer(config.tokenizer)  # the student's, as the transform counts with it
    texts = [r["response"] or "" for r in rows]
    transform(rows[:4])  # warm-up: tokenizer, checker pool, math-verify grammars

    floor, dlcot = [], []
    out: list[dict] = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        tokenizer(texts, add_special_tokens=False)
        floor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(rows), args.batch):
            out.extend(transform(rows[i : i + args.batch]))
        dlcot.append(time.perf_counter() - t0)
    f, d = statistics.median(floor), statistics.median(dlcot)
    per_round = [b / a for a, b in zip(floor, dlcot)]
    transformed = [r for r in out if r["dlcot_response"] is not None]
    chars = sum(len(t) for t in texts)
    print(f"traces: {len(rows)} ({chars / 1e6:.2f} M characters), transformed {len(transformed)}")
    print(f"tokenize (floor): median {f:.2f} s over {args.repeat} rounds {[round(x, 2) for x in floor]}")
    print(f"dlcot rules     : median {d:.2f} s over {args.repeat} rounds {[round(x, 2) for x in dlcot]}"
          f" -> {len(rows) / d:.1f} traces/s")
    print(f"ratio dlcot / tokenize: {d / f:.2f}x of the medians; per round {[round(r, 2) for r in per_round]},"
          f" worst {max(per_round):.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
