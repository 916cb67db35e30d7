"""Render a run's ``report.html`` and ``inspector.html``: self-contained pages, no network fetches.

Charts are matplotlib PNGs inlined as data URIs; the inspector's records travel as JSON inside the page
and are drawn by a small inline script, one element per segment (not per character), so a 90,000-character
trace stays fast.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import json
import re
from importlib import resources
from pathlib import Path

from longcot.charts import pyplot
from longcot.report.collect import RunData, collect
from longcot.verify.parse import parse_trace

SEGMENT_KINDS = ("restatement", "understanding", "exploration", "verification", "conclusion")
MAX_INSPECT = 600  # records embedded in the inspector; the longest are always included


def _asset(name: str) -> str:
    return resources.files("longcot.report").joinpath("assets", name).read_text(encoding="utf-8")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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


def accuracy_tokens_png(table: dict) -> str | None:
    """Accuracy against tokens, one point per row, when the table has both kinds of column."""
    cols = [str(c) for c in table["columns"]]
    acc = next((i for i, c in enumerate(cols) if re.search(r"acc|pass@1|average|avg", c, re.I)), None)
    tok = next((i for i, c in enumerate(cols) if re.search(r"token", c, re.I)), None)
    if acc is None or tok is None:
        return None
    fig, ax = _figure()
    for row in table["rows"]:
        try:
            x, y = float(row[tok]), float(row[acc])
        except (TypeError, ValueError, IndexError):
            continue
        ax.scatter([x], [y])
        ax.annotate(str(row[0]), (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(cols[tok])
    ax.set_ylabel(cols[acc])
    ax.set_title(table.get("title", "accuracy vs tokens"))
    ax.grid(alpha=0.3)
    return _png(fig)


def _table_html(columns: list, rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _page(title: str, body: str, script: str = "") -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head>"
        f"<body>{body}{script}</body></html>"
    )


def report_html(data: RunData) -> str:
    m = data.manifest
    parts = [f"<h1>Run report: {html.escape(data.run_dir.name)}</h1>"]
    versions = m.get("versions", {})
    parts.append(
        "<p class='meta'>config "
        f"<code>{html.escape(str(m.get('config_hash', '?')))}</code> · created {html.escape(str(m.get('created', '?')))}"
        f" · status {html.escape(str(m.get('status', 'unfinished')))} · "
        + " · ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in versions.items() if v)
        + " · <a href='inspector.html'>trace inspector</a></p>"
    )
    parts.append("<h2>Pipeline funnel</h2>")
    if data.funnel:
        widest = max(max(s.records_in, s.records_out) for s in data.funnel) or 1
        rows = []
        for step in data.funnel:
            width = 100 * step.records_out / widest
            reasons = "".join(
                f"<li><span class='count'>{n}</span> {html.escape(r)}</li>" for r, n in step.reasons[:8]
            )
            rows.append(
                f"<tr class='funnel-row' data-stage='{step.stage}' data-in='{step.records_in}' "
                f"data-out='{step.records_out}' data-rejected='{step.records_rejected}'>"
                f"<th>{html.escape(step.label)}<br><small>{step.stage}</small></th>"
                f"<td class='num'>{step.records_in}</td><td class='num out'>{step.records_out}</td>"
                f"<td class='num'>{step.records_rejected}</td>"
                f"<td><div class='bar' style='width:{width:.1f}%'></div><ul class='reasons'>{reasons}</ul></td></tr>"
            )
        parts.append(
            "<table class='funnel'><thead><tr><th>step</th><th>in</th><th>out</th><th>lost</th>"
            "<th>why records were lost</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    else:
        parts.append("<p>No stage has finished yet.</p>")
    if data.token_lengths:
        parts.append("<h2>Length before and after transforms</h2>")
        for stage, lengths in data.token_lengths.items():
            b, a = sorted(lengths["before"]), sorted(lengths["after"])
            ratio = sum(a) / max(sum(b), 1)
            parts.append(
                f"<figure><img alt='{stage} length histogram' src='{histogram_png(stage, lengths)}'>"
                f"<figcaption>{stage}: {len(b)} records, median {b[len(b) // 2]} → {a[len(a) // 2]}, "
                f"total ratio {ratio:.2f}</figcaption></figure>"
            )
    if data.curves:
        parts.append("<h2>Training curves</h2><div class='grid'>")
        for tag, points in sorted(data.curves.items()):
            if len(points) >= 2:
                parts.append(f"<figure><img alt='{html.escape(tag)}' src='{curve_png(tag, points)}'></figure>")
        parts.append("</div>")
    if data.eval_tables:
        parts.append("<h2>Evaluation</h2>")
        for table in data.eval_tables:
            parts.append(f"<h3>{html.escape(table.get('title', ''))}</h3>")
            parts.append(_table_html(table["columns"], table["rows"]))
            chart = accuracy_tokens_png(table)
            if chart:
                parts.append(f"<figure><img alt='accuracy vs tokens' src='{chart}'></figure>")
    artifacts = m.get("artifacts") or {}
    if artifacts:
        parts.append("<h2>Artifacts</h2>" + _table_html(["name", "path"], sorted(artifacts.items())))
    return _page(f"longcot report {data.run_dir.name}", "".join(parts))


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
    ops: list[list] = []

    def emit(op: str, text: str) -> None:
        if not text:
            return
        if ops and ops[-1][0] == op:
            ops[-1][1] += text
        else:
            ops.append([op, text])

    for tag, i1, i2, j1, j2 in _opcodes(a, b):
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "equal":
            emit("=", old)
            continue
        wa, wb = re.findall(r"\S+|\s+", old), re.findall(r"\S+|\s+", new)
        if tag != "replace" or max(len(wa), len(wb)) > max_words:
            emit("-", old)
            emit("+", new)
            continue
        for wtag, k1, k2, l1, l2 in _opcodes(wa, wb):
            if wtag == "equal":
                emit("=", "".join(wa[k1:k2]))
            else:
                emit("-", "".join(wa[k1:k2]))
                emit("+", "".join(wb[l1:l2]))
    return ops


def inspector_entry(row: dict) -> dict:
    """What the inspector needs of one record: the original thought, its segments, and a diff if perturbed."""
    original = row.get("original_response") or row.get("response") or ""
    parsed = parse_trace(original)
    entry = {
        "id": row["id"],
        "source": row.get("source"),
        "problem": (row.get("problem") or "")[:2000],
        "verdict": row.get("verdict"),
        "chars": len(original),
        "thought": parsed.thought,
        "segments": row.get("segments") or [],
        "skip": row.get("dlcot_skip_reason"),
        "stages": [e["stage"] for e in row.get("lineage") or []],
        "diff": None,
    }
    if row.get("original_response") and row.get("response") and row["original_response"] != row["response"] \
            and not row.get("segments"):
        entry["diff"] = word_diff(row["original_response"], row["response"])
    return entry


def inspector_html(data: RunData) -> str:
    rows = sorted(data.inspect_records, key=lambda r: len(r.get("original_response") or r.get("response") or ""),
                  reverse=True)[:MAX_INSPECT]
    payload = json.dumps([inspector_entry(r) for r in rows], ensure_ascii=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    legend = "".join(f"<span class='seg seg-{k}'>{k}</span> " for k in SEGMENT_KINDS)
    body = (
        f"<h1>Trace inspector: {html.escape(data.run_dir.name)}</h1>"
        "<p class='meta'><a href='report.html'>back to the report</a> · legend: " + legend +
        "<span class='seg pruned'>pruned</span></p>"
        "<div class='inspector'><aside><input id='search' type='search' placeholder='search id or text'>"
        "<ol id='list'></ol></aside><main id='view'><p>Pick a record.</p></main></div>"
    )
    script = (
        f"<script type='application/json' id='records'>{payload}</script>"
        f"<script>{_asset('inspector.js')}</script>"
    )
    return _page(f"longcot inspector {data.run_dir.name}", body, script)


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """(Re)build ``report.html`` and ``inspector.html`` in ``run_dir``; returns their paths."""
    data = collect(run_dir)
    report = data.run_dir / "report.html"
    inspector = data.run_dir / "inspector.html"
    report.write_text(report_html(data), encoding="utf-8")
    inspector.write_text(inspector_html(data), encoding="utf-8")
    return report, inspector
