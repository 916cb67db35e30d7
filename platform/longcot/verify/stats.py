"""The verify stage's report: acceptance per domain and source, token-length distributions, truncation.

``verification_stats`` is a pure function of the verified rows and the set of kept ids; ``write_histogram``
draws the token-length histogram (matplotlib); ``print_stats`` shows the headline numbers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from longcot.verify.curate import reason_kind


def percentiles(values: list[int]) -> dict[str, float | int | None]:
    """count, mean, p50/p90/p99 (nearest rank: numpy's ``inverted_cdf``) and max of ``values``."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    import numpy as np

    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="inverted_cdf").tolist()
    return {"count": len(values), "mean": round(sum(values) / len(values), 1), "p50": p50, "p90": p90, "p99": p99,
            "max": max(values)}


def _rates(rows: list[dict], kept: set[str], key: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get(key) or "unknown", []).append(row)
    table = {}
    for name, members in sorted(groups.items()):
        n_kept = sum(1 for r in members if r.get("id") in kept)
        n_correct = sum(1 for r in members if r.get("verdict") == "correct")
        table[name] = {
            "records": len(members),
            "correct": n_correct,
            "kept": n_kept,
            "correct_rate": round(n_correct / len(members), 4),
            "acceptance_rate": round(n_kept / len(members), 4),
            "verdicts": dict(Counter(r.get("verdict") or "none" for r in members)),
        }
    return table


def _token_lengths(rows: list[dict]) -> dict:
    """The length percentiles of the thought and of the solution of ``rows``."""
    return {section: percentiles([r[column] for r in rows if r.get(column) is not None])
            for section, column in (("thought", "thought_tokens"), ("solution", "solution_tokens"))}


def verification_stats(rows: list[dict], kept_ids: set[str], dropped: list[tuple[dict, str]] | None = None) -> dict:
    """The report as a JSON-ready dict. ``rows``: every verified record; ``kept_ids``: those kept."""
    total = len(rows)
    kept_rows = [r for r in rows if r.get("id") in kept_ids]
    truncated = sum(1 for r in rows if r.get("truncated"))
    return {
        "records": total,
        "kept": len(kept_rows),
        "acceptance_rate": round(len(kept_rows) / total, 4) if total else None,
        "correct_rate": round(sum(1 for r in rows if r.get("verdict") == "correct") / total, 4) if total else None,
        "truncation_rate": round(truncated / total, 4) if total else None,
        "verdicts": dict(Counter(r.get("verdict") or "none" for r in rows)),
        "markers": dict(Counter(r.get("markers") or "none" for r in rows)),
        "by_domain": _rates(rows, kept_ids, "domain"),
        "by_source": _rates(rows, kept_ids, "source"),
        "tokens": {"all": _token_lengths(rows), "kept": _token_lengths(kept_rows)},
        "dropped": dict(Counter(reason_kind(reason) for _, reason in dropped or [])),
    }


def write_histogram(rows: list[dict], kept_ids: set[str], path: str | Path) -> Path:
    """Histograms of thought and solution tokens, all verified traces against the kept ones."""
    import numpy as np

    from longcot.charts import pyplot, save_png

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("thought_tokens", "solution_tokens")):
        every = [r[name] for r in rows if r.get(name) is not None]
        kept = [r[name] for r in rows if r.get(name) is not None and r.get("id") in kept_ids]
        bins = np.histogram_bin_edges(every, bins=30) if every else 30  # the same bins for both
        if every:
            ax.hist(every, bins=bins, alpha=0.5, label=f"all ({len(every)})", color="tab:gray")
        if kept:
            ax.hist(kept, bins=bins, alpha=0.7, label=f"kept ({len(kept)})", color="tab:blue")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("tokens")
        ax.set_ylabel("traces")
        ax.legend()
    fig.suptitle("verify: token lengths")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def print_stats(stats: dict, console=None) -> None:
    """The headline numbers as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    console.print(
        f"[bold]verify[/]: {stats['records']} traces, {stats['kept']} kept "
        f"(acceptance {_pct(stats['acceptance_rate'])}, correct {_pct(stats['correct_rate'])}, "
        f"truncated {_pct(stats['truncation_rate'])}); verdicts {stats['verdicts']}"
    )
    for key, title in (("by_domain", "domain"), ("by_source", "source")):
        table = Table(title, "records", "correct", "kept", "acceptance", title=f"acceptance by {title}")
        for name, row in stats[key].items():
            table.add_row(name, str(row["records"]), str(row["correct"]), str(row["kept"]),
                          _pct(row["acceptance_rate"]))
        console.print(table)
    table = Table("section", "p50", "p90", "p99", "max", title="tokens (all traces / kept)")
    for section in ("thought", "solution"):
        every, kept = stats["tokens"]["all"][section], stats["tokens"]["kept"][section]
        table.add_row(section, *(f"{every[q]} / {kept[q]}" for q in ("p50", "p90", "p99", "max")))
    console.print(table)
    if stats["dropped"]:
        console.print(f"dropped: {stats['dropped']}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
