"""The per-run DLCoT report: what was skipped and why, where the tokens went, how much was saved.

``build_report`` is pure (records in, a JSON-able dict out); ``write_report`` puts it in the stage's run
directory as ``report.json``, ``token_ratio.json`` (every ratio and the histogram) and ``token_ratio.png``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Iterable

from longcot.dlcot.structure import KINDS
from longcot.dlcot.config import DlcotLineage
from longcot.records import lineage_detail

BIN_WIDTH = 0.05
BINS = round(1 / BIN_WIDTH)  # histogram bins 0 .. BINS - 1, and bin BINS for ratios >= 1 (nothing removed)
PARTS = (*KINDS, "solution")  # "solution": every token outside the thought (markers included)


def _code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def build_report(rows: Iterable[dict]) -> dict:
    """Counts, skip reasons, per-kind token shares and the token-ratio distribution of DLCoT records.

    ``rows`` are the stage's records (output and rejected alike); rows without a ``dlcot`` lineage entry
    (bad input lines) are counted as ``unreadable``.
    """
    skips, fallbacks, segmented_by, rewrite_fallbacks, totals = Counter(), Counter(), Counter(), Counter(), Counter()
    before, after = Counter(), Counter()  # tokens per part of PARTS, before and after
    ratios: list[float] = []
    response_ratios: list[float] = []
    examples: dict[str, str] = {}
    dangling = []
    for row in rows:
        totals["records"] += 1
        detail = lineage_detail(row, DlcotLineage)
        if detail is None:
            totals["unreadable"] += 1
            continue
        if detail.fallback:
            fallbacks[_code(detail.fallback)[:80]] += 1
        if row.get("dlcot_skip_reason"):
            code = detail.skipped or _code(row["dlcot_skip_reason"])
            skips[code] += 1
            examples.setdefault(code, row["dlcot_skip_reason"][:300])
            continue
        segmented_by[detail.segmented_by] += 1
        before.update(detail.kind_tokens_before)
        after.update(detail.kind_tokens_after)
        if row.get("tokens_before"):
            ratios.append(row["tokens_after"] / row["tokens_before"])
        if detail.response_tokens_before:
            response_ratios.append(detail.response_tokens_after / detail.response_tokens_before)
        totals.update({k: getattr(detail, k) for k in ("approaches", "approaches_kept", "units", "units_kept")})
        totals["resolved"] += len(detail.references_resolved)
        dangling += [{"id": row.get("id"), **d} for d in detail.dangling_references]
        if detail.rewrite:
            totals.update(rewrites=1, rewrites_used=bool(detail.rewrite.get("used")))
            if detail.rewrite.get("fallback"):
                rewrite_fallbacks[_code(detail.rewrite["fallback"])[:80]] += 1
    total, skipped = totals["records"], sum(skips.values())
    sum_before, sum_after = sum(before[p] for p in PARTS), sum(after[p] for p in PARTS)
    return {
        "records": total,
        "transformed": len(ratios),
        "skipped": skipped,
        "unreadable": totals["unreadable"],
        "skip_rate": round(skipped / total, 4) if total else None,
        "skip_reasons": dict(skips.most_common()),
        "skip_examples": examples,
        "segmented_by": dict(segmented_by),
        "llm_fallbacks": dict(fallbacks.most_common()),
        "tokens": {
            "before": {p: before[p] for p in PARTS},
            "after": {p: after[p] for p in PARTS},
            "share_before": {p: round(before[p] / sum_before, 4) if sum_before else None for p in PARTS},
            "share_after": {p: round(after[p] / sum_after, 4) if sum_after else None for p in PARTS},
            "kept": {p: round(after[p] / before[p], 4) if before[p] else None for p in PARTS},
        },
        "approaches": {"total": totals["approaches"], "kept": totals["approaches_kept"]},
        "dangling_references": len(dangling),
        "dangling": dangling[:50],
        "references_resolved": totals["resolved"],
        "rewrite": {"records": totals["rewrites"], "used": totals["rewrites_used"],
                    "fallbacks": dict(rewrite_fallbacks)} if totals["rewrites"] else None,
        "verification_units": {"total": totals["units"], "kept": totals["units_kept"]},
        "thought_token_ratio": _distribution(ratios),
        "response_token_ratio": _distribution(response_ratios),
        "ratios": [round(r, 4) for r in ratios],
    }


def _distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    counts = Counter(min(BINS, int(v / BIN_WIDTH)) for v in values)
    return {
        "count": len(values),
        "median": round(statistics.median(values), 4),
        "mean": round(statistics.fmean(values), 4),
        "p10": round(pick(0.10), 4),
        "p90": round(pick(0.90), 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "histogram": {"bin_width": BIN_WIDTH, "counts": [counts[b] for b in range(BINS + 1)]},
    }


def write_report(report: dict, directory: str | Path) -> dict[str, str]:
    """``report.json``, ``token_ratio.json`` and ``token_ratio.png`` in ``directory``; returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ratios = report.get("ratios", [])
    summary = {k: v for k, v in report.items() if k != "ratios"}
    paths = {"report": out / "report.json", "token_ratio": out / "token_ratio.json", "histogram": out / "token_ratio.png"}
    paths["report"].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    paths["token_ratio"].write_text(json.dumps({"ratios": ratios, **report["thought_token_ratio"]}, indent=2) + "\n")
    _plot(report, paths["histogram"])
    return {name: str(path) for name, path in paths.items()}


def _plot(report: dict, path: Path) -> None:
    from longcot.charts import pyplot, save_png

    plt = pyplot()
    ratios = report.get("ratios", [])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    edges = [i * BIN_WIDTH for i in range(BINS + 2)]
    ax.hist([min(r, 1.0) for r in ratios], bins=edges, color="#4C72B0", edgecolor="white")
    dist = report["thought_token_ratio"]
    if dist.get("count"):
        ax.axvline(dist["median"], color="#C44E52", linestyle="--", label=f"median {dist['median']:.2f}")
        ax.legend(loc="upper left")
    ax.set_xlabel("thought tokens after / before (student tokenizer)")
    ax.set_ylabel("traces")
    ax.set_title(f"DLCoT: {report['transformed']} transformed, {report['skipped']} skipped")
    fig.tight_layout()
    save_png(fig, path, dpi=100)
