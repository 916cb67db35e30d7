"""The sweep's table: one row per variant, one column per benchmark plus the average and the average
output tokens, with the published figures of the reference paper beside them; as markdown, JSON and PNG.

Reference figures live in a data file (``reference/li2025.yaml``, with its source); a value not
transcribed there is null and shows as ``?``, never as a number.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from longcot.errors import validated
from longcot.eval.metrics import HELDOUT, mean
from longcot.eval.report import markdown_table, with_ci
from longcot.rundir import write_json
from longcot.settings import StrictModel
from longcot.sweep.variants import VariantOutcome
from longcot.yamlfile import read_yaml

SHIPPED_REFERENCES = {"li2025": "li2025.yaml"}


class ReferenceRow(StrictModel):
    """One published result, and the sweep variant it compares with (by name, or by kind and ratio)."""

    label: str
    variant: str | None = Field(None, description="Variant name, e.g. base, unperturbed, wrong_answer.")
    kind: str | None = Field(None, description="Perturbation kind (with ratio) when not matched by name.")
    ratio: float | None = None
    average: float | None = Field(None, description="Published average accuracy (%), null when unknown.")
    scores: dict[str, float | None] = Field(default_factory=dict, description="Per benchmark (%), where known.")

    def matches(self, outcome: VariantOutcome) -> bool:
        if self.variant is not None:
            return self.variant == outcome.name
        return (self.kind == outcome.kind and self.ratio is not None and outcome.ratio is not None
                and abs(self.ratio - outcome.ratio) < 1e-6)


class Reference(StrictModel):
    """A paper's figures: where they come from and what they measured."""

    source: str
    url: str | None = None
    setting: str
    metric: str = "accuracy (%)"
    benchmarks: list[str]
    average_over: list[str]
    rows: list[ReferenceRow]

    def row_for(self, outcome: VariantOutcome) -> ReferenceRow | None:
        return next((row for row in self.rows if row.matches(outcome)), None)


def load_reference(spec: str | None) -> Reference | None:
    """``li2025`` (shipped), a path to a YAML in the same format, or None."""
    if spec is None:
        return None
    shipped = SHIPPED_REFERENCES.get(spec)
    path = Path(str(resources.files("longcot.sweep") / "reference" / shipped)) if shipped else Path(spec)
    data = read_yaml(path, what="sweep.reference table")
    return validated(Reference, data, f"sweep.reference {path}")


class TableRow(BaseModel):
    """One variant's row, as ``results.json`` holds it."""

    variant: str
    status: str  # finished | cached | failed
    accuracy: dict[str, float | None] = {}  # pass@1 in %, per benchmark
    average: float | None = None
    output_tokens: float | None = None
    reference: ReferenceRow | None = None
    error: str | None = None
    # measured on the held-out problems' clean teacher traces (sweep.heldout), with bootstrap 95% CIs
    heldout_nll: float | None = None
    heldout_nll_ci: list[float] | None = None
    structure_rate: float | None = None
    structure_rate_ci: list[float] | None = None


def table_rows(outcomes: list[VariantOutcome], benchmarks: list[str], reference: Reference | None) -> list[TableRow]:
    """A row per variant: accuracy per benchmark, the average (only when every benchmark has a number, as in
    the papers), and the average output tokens (mean over benchmarks of the mean per sample)."""
    rows = []
    for outcome in outcomes:
        row = TableRow(variant=outcome.name, status=outcome.shown_status, error=outcome.error,
                       reference=reference.row_for(outcome) if reference else None)
        by_bench = {s["benchmark"]: s for s in outcome.scores}
        scores = [by_bench.get(bench) for bench in benchmarks]
        row.accuracy = {b: None if s is None else 100.0 * s["pass_at_1"] for b, s in zip(benchmarks, scores)}
        tokens = [s["mean_output_tokens"] for s in scores if s and s.get("mean_output_tokens") is not None]
        present = [v for v in row.accuracy.values() if v is not None]
        row.average = mean(present) if len(present) == len(benchmarks) else None  # None with no benchmark
        row.output_tokens = mean(tokens) if len(tokens) == len(benchmarks) else None
        held = by_bench.get(HELDOUT)
        if held is not None:
            row.heldout_nll, row.heldout_nll_ci = held.get("heldout_nll"), held.get("heldout_nll_ci")
            row.structure_rate, row.structure_rate_ci = held.get("structure_rate"), held.get("structure_rate_ci")
            if row.output_tokens is None and not benchmarks:
                row.output_tokens = held.get("mean_output_tokens")
        rows.append(row)
    return rows


def _pct(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value:.1f}"


def _held(rows: list[TableRow]) -> bool:
    """Whether any variant was measured on held-out problems (the table then has their columns)."""
    return any(r.heldout_nll is not None or r.structure_rate is not None for r in rows)


def render_markdown(rows: list[TableRow], benchmarks: list[str], reference: Reference | None,
                    context: dict[str, Any]) -> str:
    """The table as markdown, with what was trained and evaluated, the reference's source and any failures."""
    held = _held(rows)
    header = ["variant", "status"] + benchmarks + ["average", "avg output tokens"]
    header += ["heldout NLL [95% CI]", "structure rate [95% CI]"] if held else []
    header += ["paper average"] if reference else []
    cells = []
    for row in rows:
        if row.status == "failed":
            values = ["failed"] * len(benchmarks) + ["failed", "-"] + (["-", "-"] if held else [])
        else:
            values = [_pct(row.accuracy.get(b)) for b in benchmarks]
            values += [_pct(row.average), "-" if row.output_tokens is None else f"{row.output_tokens:,.0f}"]
            if held:
                values += [with_ci(row.heldout_nll, row.heldout_nll_ci, 3),
                           with_ci(row.structure_rate, row.structure_rate_ci, 2)]
        if reference:
            values.append("" if row.reference is None else _pct(row.reference.average, "?"))
        cells.append([row.variant, row.status] + values)
    parts = [
        "# Structure vs content: sweep results",
        _context_line(context),
        markdown_table(header, cells, text_columns=2),
        "Accuracy is pass@1 in percent. The average is the mean over the benchmarks (left out when one is "
        "missing); output tokens are the mean over benchmarks of the mean per sample. `cached`: finished in an "
        "earlier run of the same variant and not run again.",
    ]
    if held:
        parts.append("heldout NLL: mean negative log-likelihood per token of the held-out problems' clean teacher "
                     "traces under each variant's student (lower: the student predicts the teacher better); structure "
                     "rate: share of its answers to those problems that open the teacher's thought section and make a "
                     "reflection or verification move (longcot.eval.structure). Brackets: bootstrap 95% CIs over "
                     "traces and problems.")
    if reference:
        over = ", ".join(reference.average_over)
        parts.append(
            f"Paper average: {reference.source.strip()} Setting: {reference.setting}; average over {over}. "
            f"`?`: not transcribed (unknown); blank: no published counterpart."
            + (f" Source: {reference.url}" if reference.url else "")
        )
        if not benchmarks:
            parts.append(f"Note: this sweep measures held-out NLL and structure, not accuracy on {over}; the "
                         "paper's figures stand beside it to compare which corruptions hurt, not the numbers.")
        elif sorted(benchmarks) != sorted(reference.average_over):
            parts.append(f"Note: this sweep evaluates on {', '.join(benchmarks)}, the paper's average is over "
                         f"{over}; compare the trends, not the numbers.")
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        parts.append("## Failed variants\n\n" + "\n".join(f"- {r.variant}: {r.error}" for r in failed))
    return "\n\n".join(parts) + "\n"


def _context_line(context: dict[str, Any]) -> str:
    bits = []
    if context.get("model"):
        bits.append(f"student `{context['model']}` ({context.get('mode', 'lora')})")
    if context.get("records"):
        bits.append(f"trained on up to {context['records']} records per variant")
    if context.get("eval"):
        bits.append(context["eval"])
    return ("Run: " + "; ".join(bits) + ".") if bits else ""


def plot_table(rows: list[TableRow], path: str | Path, reference: Reference | None) -> Path:
    """Two panels: average accuracy per variant (the run's beside the paper's), and average output tokens."""
    from longcot.charts import pyplot, save_png

    plt = pyplot()

    y = list(range(len(rows)))
    held = _held(rows)
    panels = 4 if held else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 1.2 + 0.42 * len(rows)), sharey=True)
    acc_ax, tok_ax = axes[0], axes[1]
    height, shift = (0.38, 0.19) if reference else (0.7, 0.0)
    bars = acc_ax.barh([v - shift for v in y], [r.average or 0.0 for r in rows], height=height, color="#3b75af",
                       label="this run")
    notes = ["failed" if r.status == "failed" else "n/a" if r.average is None else f"{r.average:.1f}" for r in rows]
    acc_ax.bar_label(bars, notes, padding=3, fontsize=7)
    if reference:
        paper = [r.reference.average if r.reference else None for r in rows]
        bars = acc_ax.barh([v + shift for v in y], [p or 0.0 for p in paper], height=height, color="#ef8636",
                           label="paper (Li et al. 2025)")
        acc_ax.bar_label(bars, ["" if p is None else f"{p:.1f}" for p in paper], padding=3, fontsize=7)
    acc_ax.set_yticks(y, [r.variant for r in rows])
    acc_ax.invert_yaxis()
    acc_ax.set_xlim(0, 105)
    acc_ax.set_xlabel("average accuracy (%)")
    acc_ax.legend(loc="lower right", fontsize=8)
    acc_ax.grid(axis="x", alpha=0.3)
    tokens = [r.output_tokens or 0.0 for r in rows]
    tok_ax.barh(y, tokens, color="#5a9e6f")
    tok_ax.set_xlabel("average output tokens")
    tok_ax.grid(axis="x", alpha=0.3)
    if held:
        _interval_panel(axes[2], y, [(r.heldout_nll, r.heldout_nll_ci) for r in rows], "#8e5ea2",
                        "heldout NLL per token (95% CI), lower is better")
        _interval_panel(axes[3], y, [(r.structure_rate, r.structure_rate_ci) for r in rows], "#c0504d",
                        "structure rate (95% CI)")
        axes[3].set_xlim(0, 1.05)
    fig.suptitle("Structure vs content: dataset variants")
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def _interval_panel(ax, y: list[int], values: list[tuple[float | None, list[float] | None]], color: str,
                    label: str) -> None:
    """A point per variant with its confidence interval as a horizontal error bar."""
    for yi, (value, ci) in zip(y, values):
        if value is None:
            ax.annotate("n/a", (0, yi), xytext=(3, -3), textcoords="offset points", fontsize=7)
            continue
        err = [[value - ci[0]], [ci[1] - value]] if ci else None
        ax.errorbar([value], [yi], xerr=err, fmt="o", color=color, capsize=3)
        ax.annotate(f"{value:.3g}", (value, yi), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)


def write_table(outcomes: list[VariantOutcome], benchmarks: list[str], reference: Reference | None,
                out_dir: str | Path, context: dict[str, Any]) -> dict[str, str]:
    """``table.md``, ``table.png`` and ``results.json`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(outcomes, benchmarks, reference)
    paths = {"table": out / "table.md", "chart": out / "table.png", "results": out / "results.json"}
    paths["table"].write_text(render_markdown(rows, benchmarks, reference, context), encoding="utf-8")
    plot_table(rows, paths["chart"], reference)
    results = {
        "benchmarks": benchmarks,
        "rows": [r.model_dump() for r in rows],
        "variants": [asdict(o) for o in outcomes],
        "reference": None if reference is None else reference.model_dump(),
        "context": context,
    }
    write_json(paths["results"], results)
    return {k: str(v) for k, v in paths.items()}
