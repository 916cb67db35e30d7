"""The ``sweep`` stage: build every dataset variant, train and evaluate a student on each, tabulate.

In: records (from the previous stage, ``--input`` or ``sweep.input``: a longcot record file, or a raw
trace file mapped with ``sweep.input_fields``); records without a verdict are verified first, on Ray. The
unperturbed, DLCoT and perturbation variants are built from the correct ones, the wrong-answer variant from
the ones verification rejected. Out (in the stage directory): ``table.md``, ``table.png``, ``results.json``,
``eval/`` (every variant's scores in the eval stage's report) and, when it verified any, ``verified.jsonl``.
No records out; unreadable input lines, and rows whose check raised, go to the rejected file.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from longcot import records
from longcot.cluster import connect, require_resources
from longcot.dataflow import read_input
from longcot.dlcot.traces import read_traces
from longcot.errors import InputError
from longcot.recordfiles import RejectedWriter, write_records
from longcot.stages import StageContext, StageResult
from longcot.sweep.config import SweepConfig
from longcot.sweep.schedule import console, run_variants
from longcot.sweep.table import load_reference, write_table
from longcot.sweep.variants import Variant, VariantPlan, plan_variants

STAGE = "sweep"


def run(config: SweepConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Run the sweep (see the module docstring); a failed variant is in the table, not an exception."""
    source = input_path or config.input
    if source is None:
        raise InputError("the sweep needs verified records: set sweep.input, pass --input, or run verify before it")
    if not Path(source).exists():
        raise InputError(f"no such file or directory ({'--input' if input_path else 'sweep.input'})", str(source))
    reference = load_reference(config.reference)  # a bad reference file fails before any work
    connect(ctx.ray)
    require_resources(config.resources, "sweep variant")
    cache_dir = Path(config.cache_dir or ctx.run_dir.path.parent / "sweep-cache").resolve()
    ctx.run_dir.add_input(source)

    reader = partial(read_traces, fields=config.input_fields)  # longcot records, or raw traces mapped to them
    with RejectedWriter(ctx.rejected_path(STAGE)) as rejected:
        rows = read_input(source, STAGE, rejected, reader)
        n_in = len(rows) + rejected.count
        rows = verified(rows, config, ctx, rejected)
    rows, heldout_path = hold_out(rows, config, cache_dir)
    variants = plan_variants(config)
    inputs = {data: variant_input(rows, data, variants, config, cache_dir) for data in {v.data for v in variants}}
    ray = ctx.ray.model_dump(mode="json") if ctx.ray is not None else None
    plans = [VariantPlan.make(v, config, inputs[v.data][0], inputs[v.data][1], cache_dir, ray, heldout_path,
                              nothing_to_build=inputs[v.data][2]) for v in variants]
    console.print(f"[bold]sweep[/] {len(plans)} variants, at most {config.max_concurrent} at a time; "
                  f"work in {cache_dir}")

    outcomes = run_variants(plans, resources=config.resources, max_concurrent=config.max_concurrent)

    out_dir = ctx.run_dir.stage_dir(STAGE)
    context = {
        "model": config.train.model,
        "mode": config.train.mode,
        "records": config.limit or sum(1 for r in rows if r.get("verdict") == "correct"),
        "eval": evaluated_on(config),
        "cache_dir": str(cache_dir),
    }
    paths = write_table(outcomes, config.eval.benchmarks, reference, out_dir, context)
    paths.update(combined_eval_report([o.results for o in outcomes if o.results], out_dir / "eval"))
    counts = {status: sum(o.shown_status == status for o in outcomes) for status in ("finished", "cached", "failed")}
    console.print(f"[bold]sweep[/] {counts['finished']} finished, {counts['cached']} skipped (finished earlier), "
                  f"{counts['failed']} failed; table: {paths['table']}")
    return StageResult(
        STAGE, records_in=n_in, records_rejected=rejected.count,
        artifacts={"sweep_table": paths["table"], "sweep_chart": paths["chart"], "sweep_results": paths["results"]},
        summary={**counts, "variants": {o.name: o.shown_status for o in outcomes},
                 "failures": {o.name: o.error for o in outcomes if o.status != "finished"}, "files": paths},
    )


def evaluated_on(config: SweepConfig) -> str:
    """What every variant is evaluated on, in words."""
    parts = []
    if config.eval.benchmarks:
        parts.append(", ".join(config.eval.benchmarks) + (
            f" (the first {config.eval.limit} problem{'s' if config.eval.limit > 1 else ''} of each)"
            if config.eval.limit else ""))
    if config.heldout is not None:
        parts.append(f"{config.heldout.problems} held-out problems and their clean teacher traces")
    return "evaluated on " + " and ".join(parts)


def verified(rows: list[dict], config: SweepConfig, ctx: StageContext, rejected: RejectedWriter) -> list[dict]:
    """Rows with a verdict: those that arrive without one are verified on Ray by the verify stage's actors
    (written to the stage directory's ``verified.jsonl``); a row whose check raised is rejected."""
    unverified = [r for r in rows if r.get("verdict") is None]
    if not unverified:
        return rows
    from longcot.verify.stage import verify_on_ray

    console.print(f"[bold]sweep[/] verifying {len(unverified)} records that have no verdict")
    checked, _ = verify_on_ray(unverified, config.verify, stage=STAGE, rejected=rejected, ray_config=ctx.ray,
                               output=ctx.run_dir.stage_dir(STAGE) / "verified.jsonl", progress=ctx.progress)
    placed = iter(checked)  # in the places of the unverified rows, None where a check raised
    in_order = (row if row.get("verdict") is not None else next(placed) for row in rows)
    return [row for row in in_order if row is not None]


def hold_out(rows: list[dict], config: SweepConfig, cache_dir: Path) -> tuple[list[dict], str | None]:
    """``sweep.heldout``: the problems no variant trains on, their clean (correct, unperturbed) traces written to
    a content-addressed file every variant's eval measures on; returns the other rows and that file."""
    if config.heldout is None:
        return rows, None
    from longcot.train.examples import split_heldout

    correct = [r for r in rows if r.get("verdict") == "correct"]
    _, held = split_heldout(correct, config.heldout.problems, config.heldout.seed, config.train.data)
    keys = {records.problem_key(r.get("problem") or "") for r in held}
    rest = [r for r in rows if records.problem_key(r.get("problem") or "") not in keys]
    return rest, _content_file(held, cache_dir, "heldout")


def _content_file(chosen: list[dict], cache_dir: Path, kind: str) -> str:
    """``chosen`` written once to ``<cache_dir>/inputs/<kind>-<content hash>.jsonl`` (lineage left out of the hash:
    timestamps and timings do not make the same records a new input)."""
    digest = records.stable_hash([{**r, "lineage": None} for r in chosen])
    final = cache_dir / "inputs" / f"{kind}-{digest}.jsonl"
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
        write_records(tmp, chosen)
        tmp.replace(final)
    return str(final)


def select_records(rows: list[dict], data: str, variants: list[Variant], limit: int | None) -> list[dict]:
    """The records a kind of variant is built from: ``correct`` ones, or for ``all`` (the wrong-answer
    variants) the ones their perturb settings use: rejected verdicts, plus correct ones to replace answers in."""
    if data == "none":
        return []
    correct = [r for r in rows if r.get("verdict") == "correct"]
    if data == "correct":
        return correct[:limit]
    wrong_verdicts = {v for var in variants if var.data == "all" for v in var.perturb.get("wrong_verdicts", [])}
    replace = any(var.perturb.get("replace_answers") for var in variants if var.data == "all")
    wrong = [r for r in rows if r.get("verdict") in wrong_verdicts][:limit]
    return wrong + (correct[:limit] if replace else [])


def variant_input(rows: list[dict], data: str, variants: list[Variant], config: SweepConfig,
                  cache_dir: Path) -> tuple[str | None, str | None, str | None]:
    """Write the records of ``data`` to a content-addressed file; returns (path, content hash, and why no
    variant can be built from them when there are none)."""
    if data == "none":
        return None, None, None
    chosen = select_records(rows, data, variants, config.limit)
    nothing = None
    if not chosen:  # the variants built from these fail, each with this reason; the others still run
        what = "verified-correct records" if data == "correct" else "records verification rejected"
        nothing = f"no record could be trained on: the sweep's input has no {what}"
        console.print(f"[yellow]sweep:[/] the input has no {what}; the variants built from them will fail")
    path = _content_file(chosen, cache_dir, data)
    return path, Path(path).stem.split("-", 1)[1], nothing


def combined_eval_report(results: list[str], out_dir: Path) -> dict[str, str]:
    """Every variant's scores in one eval report (details, tokens, accuracy-vs-tokens chart)."""
    if not results:
        return {}
    from longcot.eval.report import combine_results, write_report

    scores, manifest = combine_results(results)
    paths = write_report(scores, out_dir, manifest, title="Sweep: every variant's evaluation")
    return {f"eval_{k}": v for k, v in paths.items()}
