"""Render a run's ``report.html`` and ``inspector.html``: self-contained pages, no network fetches.

The pages are jinja2 templates (``templates/``, autoescaped) filled from ``collect.RunData``. Charts are
matplotlib PNGs inlined as data URIs; the inspector's records travel as JSON inside the page and are drawn
by a small inline script, one element per segment (not per character), so a 90,000-character trace stays
fast.
"""

from __future__ import annotations

import base64
import difflib
import functools
import io
import itertools
import json
import re
from importlib import resources
from pathlib import Path
from statistics import median_high

from longcot.charts import pyplot
from longcot.dlcot.structure import KINDS
from longcot.report.collect import RunData, collect
from longcot.traces import parse_trace

MAX_INSPECT = 600  # records embedded in the inspector; the longest are always included


def _asset(name: str) -> str:
    return resources.files("longcot.report").joinpath("assets", name).read_text(encoding="utf-8")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return _data_uri(buf.getvalue())


def _figure():
    return pyplot().subplots(figsize=(6.4, 3.2))


def histogram_png(stage: str, lengths: dict[str, list[int]]) -> str:
    fig, ax = _figure()
    top = max(max(lengths["before"]), max(lengths["after"]), 1)
    bins = [top * i / 30 for i in range(31)]
    ax.hist(lengths["before"], bins=bins, alpha=0.55, label="before", color="#7a7a7a")
    ax.hist(lengths["after"], bins=bins, alpha=0.65, label="after", color="#2b8cbe")
    ax.set_xlabel("length (tokens)" if stage == "dlcot" else "length (words)")
    ax.set_ylabel("records")
    ax.set_title(f"{stage}: length before and after")
    ax.legend()
    return _png(fig)


def curve_png(tag: str, points: list[tuple[int, float]]) -> str:
    fig, ax = _figure()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
    ax.set_xlabel("step")
    ax.set_title(tag)
    ax.grid(alpha=0.3)
    return _png(fig)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


@functools.lru_cache(maxsize=1)
def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("longcot.report", "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True)


def _artifact_link(run_dir: Path, value: str) -> str | None:
    """A link that works from report.html: relative inside the run directory, a file URI outside, none for a
    value that is no path (a model name)."""
    path = Path(value)
    if not path.is_absolute() or not path.exists():
        return None
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def _evaluation(data: RunData) -> dict | None:
    from longcot.eval.metrics import BenchmarkScore
    from longcot.eval.report import MEASURE_COLUMNS, MEASURES_NOTE, measure_rows

    if not data.evaluation:
        return None
    scores = [BenchmarkScore(**s) for s in data.evaluation["scores"]]
    manifest = data.evaluation.get("manifest") or {}
    chart = data.run_dir / "eval" / "accuracy_vs_tokens.png"
    return {
        "columns": MEASURE_COLUMNS, "rows": measure_rows(scores),
        "note": MEASURES_NOTE.format(markers=manifest.get("structure_markers")).replace("`", ""),
        "notes": manifest.get("notes") or [],
        "chart": _data_uri(chart.read_bytes()) if chart.exists() else None,
    }


def _dlcot(data: RunData) -> dict | None:
    """DLCoT's references, rewrite and gold agreement, for the report."""
    summary = data.summary("dlcot")
    if not summary:
        return None
    from longcot.dlcot.gold import gold_rows

    gold = data.dlcot_gold or {}
    return {"summary": summary, "gold": gold.get("summary"), "gold_rows": gold_rows(gold.get("traces", [])),
            "gold_missing": gold.get("missing", [])}


def report_html(data: RunData) -> str:
    m = data.manifest
    verify = data.summary("verify")
    lengths = []
    for stage, sizes in data.token_lengths.items():
        b, a = sizes["before"], sizes["after"]
        lengths.append({"stage": stage, "png": histogram_png(stage, sizes),
                        "caption": f"{stage}: {len(b)} records, median {median_high(b)} → {median_high(a)}, "
                                   f"total ratio {sum(a) / max(sum(b), 1):.2f}"})
    serve = data.summary("serve")
    return _templates().get_template("report.html.j2").render(
        run=data.run_dir.name, manifest=m, css=_asset("report.css"),
        versions=[(k, v) for k, v in (m.get("versions") or {}).items() if v],
        headlines=data.headlines, funnel=data.funnel,
        widest=max([max(s.records_in, s.records_out) for s in data.funnel] or [1]) or 1,
        verdicts=sorted((verify.get("verdicts") or {}).items()),
        verify_kept=(m.get("stages", {}).get("verify") or {}).get("records_out"),
        train=data.summary("train") or None, lengths=lengths,
        curves=[(tag, curve_png(tag, points)) for tag, points in sorted(data.curves.items()) if len(points) >= 2],
        evaluation=_evaluation(data), dlcot=_dlcot(data),
        serve=serve if serve.get("mode") == "smoke_test" else None,
        artifacts=[(name, _artifact_link(data.run_dir, str(value)), value)
                   for name, value in sorted((m.get("artifacts") or {}).items())],
        fmt=_fmt,
    )


def _opcodes(a: list[str], b: list[str]):
    return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()


def word_diff(before: str, after: str, max_words: int = 4000) -> list[list]:
    """``[[op, text], ...]`` with op ``=``, ``-`` or ``+``; joining the ``=``/``-`` texts gives ``before``
    and the ``=``/``+`` texts gives ``after``.

    Paragraphs (text up to a blank line) are matched first, then words inside each changed stretch, so a
    shuffled 140,000-character trace diffs in well under a second (a word diff of the whole is quadratic);
    a changed stretch of more than ``max_words`` words per side is shown as removed then inserted.
    """
    a, b = re.split(r"(?<=\n\n)", before), re.split(r"(?<=\n\n)", after)
    pieces: list[tuple[str, str]] = []  # (op, text); empty texts are dropped and runs of one op joined below
    for tag, i1, i2, j1, j2 in _opcodes(a, b):
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "equal":
            pieces.append(("=", old))
            continue
        wa, wb = re.findall(r"\S+|\s+", old), re.findall(r"\S+|\s+", new)
        if tag != "replace" or max(len(wa), len(wb)) > max_words:
            pieces += [("-", old), ("+", new)]
            continue
        for wtag, k1, k2, l1, l2 in _opcodes(wa, wb):
            if wtag == "equal":
                pieces.append(("=", "".join(wa[k1:k2])))
            else:
                pieces += [("-", "".join(wa[k1:k2])), ("+", "".join(wb[l1:l2]))]
    runs = itertools.groupby((piece for piece in pieces if piece[1]), key=lambda piece: piece[0])
    return [[op, "".join(text for _, text in run)] for op, run in runs]


def inspector_entry(row: dict, gold: dict | None = None) -> dict:
    """What the inspector needs of one record: the original thought, its segments (each dropped one with why),
    its dangling references, the rewrite, its agreement with gold (``gold``: by problem id), and a diff if
    perturbed."""
    from longcot.dlcot.config import DlcotLineage
    from longcot.records import lineage_detail

    original = row.get("original_response") or row.get("response") or ""
    detail = lineage_detail(row, DlcotLineage)
    # a changed response with no segments to show the change: diff it against the original
    changed = original != (row.get("response") or original) and not row.get("segments")
    return {
        "id": row["id"],
        "source": row.get("source"),
        "problem": (row.get("problem") or "")[:2000],
        "verdict": row.get("verdict"),
        "chars": len(original),
        "thought": parse_trace(original).thought,
        "segments": row.get("segments") or [],
        "skip": row.get("dlcot_skip_reason"),
        "stages": [e["stage"] for e in row.get("lineage") or []],
        "diff": word_diff(original, row["response"]) if changed else None,
        "dangling": detail.dangling_references if detail else [],
        "resolved": detail.references_resolved if detail else [],
        "rewrite": detail.rewrite if detail else None,
        "gold": (gold or {}).get(row.get("problem_id")),
    }


def inspector_html(data: RunData) -> str:
    rows = sorted(data.inspect_records, key=lambda r: len(r.get("original_response") or r.get("response") or ""),
                  reverse=True)[:MAX_INSPECT]
    gold = {a["problem_id"]: a for a in (data.dlcot_gold or {}).get("traces", [])}
    payload = json.dumps([inspector_entry(r, gold) for r in rows], ensure_ascii=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    return _templates().get_template("inspector.html.j2").render(
        run=data.run_dir.name, css=_asset("report.css"), kinds=KINDS, payload=payload,
        script=_asset("inspector.js"))


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """(Re)build ``report.html`` and ``inspector.html`` in ``run_dir``; returns their paths."""
    data = collect(run_dir)
    report = data.run_dir / "report.html"
    inspector = data.run_dir / "inspector.html"
    report.write_text(report_html(data), encoding="utf-8")
    inspector.write_text(inspector_html(data), encoding="utf-8")
    return report, inspector
