"""Side-by-side reports of benchmark scores: markdown, JSON and PNG charts of accuracy against tokens.

In: ``BenchmarkScore``s of any number of variants (models, adapters, dataset variants) and the
reproducibility manifest. Out: ``report.md`` (the papers' shape: one row per variant, one column per
benchmark, accuracy and mean output tokens), ``results.json`` (every number) and
``accuracy_vs_tokens.png``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from longcot.errors import InputError
from longcot.eval.metrics import BenchmarkScore, mean
from longcot.rundir import write_json


def _f(value: float | None, spec: str = ".3f", scale: int = 1) -> str:
    """``value`` (times ``scale``) formatted by ``spec``, or ``-`` when there is none."""
    return "-" if value is None else format(scale * value, spec)


_pct = functools.partial(_f, spec=".1f", scale=100)  # a rate in percent
_num = functools.partial(_f, spec=",.0f")  # a token count


def _grid(scores: list[BenchmarkScore]) -> tuple[list[str], list[str], dict[tuple[str, str], BenchmarkScore]]:
    variants = list(dict.fromkeys(s.variant for s in scores))
    benches = list(dict.fromkeys(s.benchmark for s in scores))
    return variants, benches, {(s.variant, s.benchmark): s for s in scores}


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A markdown table: the first ``text_columns`` columns left-aligned, the numbers right-aligned."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def paper_table(scores: list[BenchmarkScore], metric: str = "pass_at_1") -> str:
    """Variants as rows, benchmarks as columns, plus the mean over benchmarks (the papers' layout).

    ``metric`` is ``pass_at_1`` (percent) or ``mean_output_tokens`` / ``mean_thought_tokens``.
    """
    variants, benches, cell = _grid(scores)
    fmt = _pct if metric == "pass_at_1" else _num
    rows = []
    for v in variants:
        values = [getattr(cell[(v, b)], metric) if (v, b) in cell else None for b in benches]
        avg = None if None in values else mean(values)  # it only means something when every benchmark has a number
        rows.append([v] + [fmt(x) for x in values] + [fmt(avg)])
    return markdown_table(["variant"] + benches + ["average"], rows)


def details_table(scores: list[BenchmarkScore]) -> str:
    """One row per (variant, benchmark) with every score."""
    ks = sorted({k for s in scores for k in s.pass_at_k}, key=lambda k: int(k.split("@")[1]))
    header = ["variant", "benchmark", "problems", "n", "pass@1 %"] + [f"{k} %" for k in ks] + [
        "maj@n %", "output tok", "thought tok", "tok (correct)", "truncated %", "no answer %",
    ]
    rows = [[s.variant, s.benchmark, str(s.problems), str(s.samples_per_problem), _pct(s.pass_at_1)]
            + [_pct(s.pass_at_k.get(k)) for k in ks]
            + [_pct(s.maj_at_n), _num(s.mean_output_tokens), _num(s.mean_thought_tokens),
               _num(s.mean_output_tokens_correct), _pct(s.truncated_rate), _pct(s.no_answer_rate)]
            for s in scores]
    return markdown_table(header, rows, text_columns=2)


def ci_text(ci: list[float] | None, digits: int = 3) -> str:
    """``[lo, hi]`` of a 95% interval, or ``[no CI]`` when too few items to resample."""
    return "[no CI]" if not ci else f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def with_ci(value: float | None, ci: list[float] | None, digits: int) -> str:
    """``value`` and its 95% interval ``[lo, hi]`` when it has one, or ``-``."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _delta(value: float | None, ci: list[float] | None, digits: int) -> str:
    """A paired difference with its CI (``ci_text``), or ``-``."""
    return "-" if value is None else f"{value:+.{digits}f} {ci_text(ci, digits)}"


MEASURE_COLUMNS = ["variant", "set", "heldout NLL", "Δ NLL [95% CI]", "Δ NLL %", "structure rate [95% CI]",
                   "Δ structure [95% CI]", "opens thought", "pass@1 %", "output tok", "vs"]


def measure_rows(scores: list[BenchmarkScore]) -> list[list[str]]:
    """Rows of ``MEASURE_COLUMNS``: each variant's held-out NLL and structure, paired with the baseline."""
    return [[
        s.variant, s.benchmark, _f(s.heldout_nll), _delta(s.heldout_nll_delta, s.heldout_nll_delta_ci, 3),
        _f(s.heldout_nll_relative, "+.1f", 100),
        with_ci(s.structure_rate, s.structure_rate_ci, 2),
        _delta(s.structure_rate_delta, s.structure_rate_delta_ci, 2),
        _f(s.thought_rate, ".2f"), _pct(s.pass_at_1), _num(s.mean_output_tokens), str(s.baseline or "-"),
    ] for s in scores if s.structure_rate is not None or s.heldout_nll is not None]


MEASURES_NOTE = (
    "heldout NLL: mean negative log-likelihood per response token of held-out teacher traces (formatted as in "
    "training); structure rate: share of answers that open a thought section in the teacher's marker convention "
    "({markers}) and make a reflection or verification move (longcot.eval.structure); opens thought: the first "
    "condition alone. Δ: this variant minus `vs`, paired on the same traces and problems, with bootstrap 95% CIs."
)


def _manifest_lines(manifest: dict[str, Any]) -> list[str]:
    lines = []
    if manifest.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items() if v))
    for name, variant in (manifest.get("variants") or {}).items():
        if variant.get("kind") == "model":
            lines.append(
                f"- {name}: model `{variant.get('model')}` (revision {variant.get('revision') or '-'})"
                + (f", adapter `{variant['adapter']}`" if variant.get("adapter") else "")
                + f", backend {variant.get('backend')}, dtype {variant.get('dtype')}, "
                + ", ".join(f"{k}={v}" for k, v in (variant.get("sampling") or {}).items())
            )
        else:
            lines.append(f"- {name}: saved responses {', '.join(f'`{p}`' for p in variant.get('files', {}))}")
    return lines


def render_markdown(scores: list[BenchmarkScore], manifest: dict[str, Any], title: str = "Evaluation") -> str:
    parts = [f"# {title}"]
    measured = measure_rows(scores)  # the measures that move only if training worked
    if measured:
        parts += ["## Held-out measures", MEASURES_NOTE.format(markers=manifest.get("structure_markers")),
                  markdown_table(MEASURE_COLUMNS, measured, text_columns=2)]
    for heading, metric in [("Accuracy (pass@1, %)", "pass_at_1"), ("Mean output tokens", "mean_output_tokens"),
                            ("Mean thought tokens", "mean_thought_tokens")]:
        parts += [f"## {heading}", paper_table(scores, metric)]
    parts += ["## Details", details_table(scores)]
    lines = _manifest_lines(manifest)
    if lines:
        parts += ["## Reproducibility (full record in manifest.json)", "\n".join(lines)]
    return "\n\n".join(parts) + "\n"


def plot_accuracy_vs_tokens(scores: list[BenchmarkScore], path: str | Path) -> Path:
    """One panel per benchmark: each variant is a point at (mean output tokens, pass@1)."""
    from longcot.charts import pyplot, save_png

    plt = pyplot()

    variants, benches, cell = _grid(scores)
    cols = min(4, len(benches))
    rows = -(-len(benches) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    for ax, bench in zip(axes.flat, benches):
        points = [(v, s) for v in variants
                  if (s := cell.get((v, bench))) is not None and s.mean_output_tokens is not None]
        for v, s in points:
            ax.scatter([s.mean_output_tokens], [100 * s.pass_at_1], color=colors[v], s=60, label=v)
            ax.annotate(v, (s.mean_output_tokens, 100 * s.pass_at_1), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        most = max((s.mean_output_tokens for _, s in points), default=0)
        # token counts compare as ratios: zero in view, and room for the labels
        ax.set(title=bench, xlabel="mean output tokens", ylabel="pass@1 (%)", ylim=(-5, 105),
               xlim=(0, max(most, 1) * 1.25))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(benches):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[v], label=v) for v in variants]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(variants), 6), frameon=False)
    fig.suptitle("Accuracy against tokens")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return save_png(fig, path, dpi=110)


def write_report(
    scores: list[BenchmarkScore], out_dir: str | Path, manifest: dict[str, Any], *, charts: bool = True,
    title: str = "Evaluation",
) -> dict[str, str]:
    """Write ``report.md``, ``results.json`` and (with ``charts``) ``accuracy_vs_tokens.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.md"}
    paths["report"].write_text(render_markdown(scores, manifest, title), encoding="utf-8")
    paths["results"] = write_json(out / "results.json", {"scores": [s.as_dict() for s in scores], "manifest": manifest})
    if charts and scores:
        paths["chart"] = plot_accuracy_vs_tokens(scores, out / "accuracy_vs_tokens.png")
    return {k: str(v) for k, v in paths.items()}


def load_scores(path: str | Path) -> tuple[list[BenchmarkScore], dict[str, Any]]:
    """Scores and manifest back from a ``results.json`` (to combine earlier evaluations side by side)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [BenchmarkScore(**s) for s in data["scores"]], data.get("manifest") or {}
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not an eval results.json ({type(exc).__name__}: {exc})", str(path)) from None


def combine_results(paths: list[str | Path]) -> tuple[list[BenchmarkScore], dict[str, Any]]:
    """Scores of several ``results.json`` in one list (a later file's (variant, benchmark) replaces an
    earlier one's), with a manifest that keeps each file's own manifest under ``sources``."""
    merged: dict[tuple[str, str], BenchmarkScore] = {}
    manifest: dict[str, Any] = {"variants": {}, "sources": {}}
    for path in paths:
        scores, own = load_scores(path)
        for s in scores:
            merged[(s.variant, s.benchmark)] = s
        manifest["variants"].update(own.get("variants") or {})
        manifest["sources"][str(path)] = own
        manifest.setdefault("versions", own.get("versions"))
    return list(merged.values()), manifest
