"""The ``dlcot`` stage: the DLCoT transform mapped over a record file with Ray Data, then the report.

Input: the previous stage's records, or ``config.input`` (a raw trace file, read as records with
``config.fields`` naming its columns). Output: every record, transformed or with its skip reason (``on_skip:
keep``), to the stage's output; rejected: malformed input lines, and skipped records with ``on_skip:
reject``. The report (``report.json``, ``token_ratio.json``, ``token_ratio.png``) goes to the stage's
run directory and its headline numbers to the manifest's summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

from longcot.dataflow import run_row_stage
from longcot.dlcot.config import DlcotConfig
from longcot.dlcot.report import build_report, write_report
from longcot.dlcot.traces import read_traces
from longcot.dlcot.transform import STAGE, DlcotTransform
from longcot.errors import ConfigError, InputError
from longcot.recordfiles import BadLine, good_records, read_raw, read_records
from longcot.stages import StageContext, StageResult

# the report's numbers the stage's summary repeats
_SUMMARIZED = ("transformed", "skipped", "skip_reasons", "llm_fallbacks", "dangling_references", "references_resolved",
               "rewrite")


def _stage_rows(output: Path, rejected: Path):
    """Every record the stage wrote: its output, then the records inside its rejected entries (a bad input
    line's entry holds its text, no lineage: the report counts it as unreadable)."""
    yield from good_records(output)
    if rejected.exists():
        for item in read_raw(rejected):  # {stage, reason, record} entries
            if not isinstance(item, BadLine):
                yield item[1].get("record") or {}


def run(config: DlcotConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Transform every record; records in == out + rejected. See the module docstring."""
    stage_dir = ctx.run_dir.stage_dir(STAGE)
    reader = read_records
    if config.input:
        if not Path(config.input).exists():
            raise InputError("no such file or directory (dlcot.input)", config.input)
        ctx.run_dir.add_input(config.input)
        source, reader = Path(config.input), partial(read_traces, fields=config.fields)
    elif input_path:
        source = Path(input_path)
    else:
        raise ConfigError("dlcot: no input; set dlcot.input to a trace file, or run dlcot after a stage that "
                          "writes records (or pass --input)")
    if config.segmenter == "llm":  # fail fast on what no fallback mends: an openai judge without its API key
        from longcot.dlcot.llm import judge_generate_config
        from longcot.generate.backends import make_backend

        make_backend(judge_generate_config(config.judge)).check_local()
    output, rejected = ctx.output_path(STAGE), ctx.rejected_path(STAGE)
    result = run_row_stage(
        DlcotTransform(config), stage=STAGE, input_path=source, output_path=output, rejected_path=rejected,
        reader=reader, batch=True, batch_size=config.batch_size, tasks=config.concurrency,
        resources=config.resources, progress=ctx.progress, ray_config=ctx.ray,
    )
    report = build_report(_stage_rows(Path(output), Path(rejected)))
    paths = write_report(report, stage_dir)
    ratio = report["thought_token_ratio"]
    result.summary = {
        "segmenter": config.segmenter, **{key: report[key] for key in _SUMMARIZED},
        # skipped records that went to the output unchanged (on_skip: keep), not to the rejected file
        "passed_on": report["skip_reasons"] if config.on_skip == "keep" else {},
        "median_token_ratio": ratio.get("median"), "report": paths["report"],
    }
    result.artifacts = {"dlcot_report": paths["report"], "dlcot_histogram": paths["histogram"]}
    skips = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in report["skip_reasons"].items())  # most first
    result.headlines = [f"{report['transformed']} traces simplified (median thought-token ratio "
                        f"{ratio.get('median', '-')}); {report['skipped']} skipped" + (f": {skips}" if skips else ""),
                        f"{report['dangling_references']} dangling references left "
                        f"({report['references_resolved']} kept whole)"]
    if config.gold is not None:
        result.summary["gold"] = gold_agreement(config, Path(output), stage_dir)
        result.artifacts["dlcot_gold"] = str(stage_dir / "gold.json")
        result.headlines.append(gold_line(result.summary["gold"]))
    return result


def gold_agreement(config: DlcotConfig, output: Path, stage_dir: Path) -> dict:
    """Agreement of the stage's output with ``config.gold`` (``dlcot.gold``), written to ``gold.json``; returns
    its summary."""
    from longcot.dlcot.gold import compare, load_gold, summarize

    gold = load_gold(config.gold.path, config.gold.traces)
    found, missing = compare(good_records(output), gold)
    data = {"gold": config.gold.path, "summary": summarize(found), "traces": [asdict(a) for a in found],
            "missing": missing}
    (stage_dir / "gold.json").write_text(json.dumps(data, indent=2) + "\n")
    return data["summary"]


def gold_line(summary: dict) -> str:
    """The gold comparison in one line."""
    if not summary.get("traces"):
        return "against gold: no simplified trace has a gold entry"
    return (f"against gold ({summary['traces']} traces): exploration cut over "
            f"{100 * summary['exploration_cut_limit']:.0f}% in {summary['exploration_cut_over_limit']}, over-cut over "
            f"{100 * summary['over_cut_limit']:.0f}% in {summary['over_cut_over_limit']}, median kept share "
            f"{summary['median_kept_share']} (gold {summary['gold_median_kept_share']}), first-answer boundary "
            f"within 2 paragraphs in {summary['boundary_within_2']}")
