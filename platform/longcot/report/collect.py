"""Gather what a run did from its run directory: the funnel, loss reasons, token lengths, curves, tables.

Everything is read from files the stages already write (``manifest.json``, each stage's records and
``rejected.jsonl``, TensorBoard event files, evaluation JSON), so a report can be rebuilt at any time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longcot.config import STAGE_ORDER
from longcot.errors import InputError
from longcot.recordfiles import load_records

FUNNEL_STEPS = (
    ("problems", "problems"),
    ("generate", "samples"),
    ("verify", "verified"),
    ("dlcot", "transformed"),
    ("perturb", "transformed"),
    ("train", "trained"),
    ("eval", "evaluated"),
)


@dataclass
class FunnelStep:
    stage: str
    label: str
    records_in: int
    records_out: int
    records_rejected: int
    reasons: list[tuple[str, int]] = field(default_factory=list)  # (reason, count), most common first


@dataclass
class RunData:
    run_dir: Path
    manifest: dict[str, Any]
    funnel: list[FunnelStep]
    token_lengths: dict[str, dict[str, list[int]]]  # stage -> {"before": [...], "after": [...]}
    curves: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)], only the tags whose value changes
    evaluation: dict[str, Any] | None  # eval/results.json: {"scores": [...], "manifest": {...}}
    inspect_records: list[dict]  # records worth inspecting (segmented or perturbed)
    headlines: list[tuple[str, str]] = field(default_factory=list)  # (stage, what it found), in pipeline order
    dlcot_gold: dict | None = None  # dlcot/gold.json: agreement with an expert gold segmentation

    def summary(self, stage: str) -> dict[str, Any]:
        return (self.manifest.get("stages", {}).get(stage) or {}).get("summary") or {}


def reason_key(reason: str) -> str:
    """Group rejection reasons: drop the stage prefix, file:line locations and ids, keep the cause."""
    text = re.sub(r"^[a-z_]+: ", "", reason.strip())
    text = re.sub(r"\S+:\d+: ", "", text)
    text = re.sub(r"\(id [0-9a-f]+\)", "", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
    return text[:120].strip()


def _rejected_reasons(run_dir: Path, stage: str) -> list[tuple[str, int]]:
    path = run_dir / stage / "rejected.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        counts = Counter(reason_key(json.loads(line).get("reason", "unknown")) for line in handle if line.strip())
    return counts.most_common()


def funnel(run_dir: Path, manifest: dict) -> list[FunnelStep]:
    stages = manifest.get("stages", {})
    steps = []
    for stage, label in FUNNEL_STEPS:
        entry = stages.get(stage)
        if entry is None:
            continue
        reasons = _rejected_reasons(run_dir, stage)
        summary = entry.get("summary") or {}
        for key, value in (summary.get("passed_on") or {}).items():  # the rejected file has the rest
            reasons.append((f"skipped, passed on unchanged: {key}", int(value)))
        if summary.get("held_out"):  # set aside for evaluation, not lost
            reasons.append(("held out for evaluation (train.heldout)", int(summary["held_out"])))
        steps.append(
            FunnelStep(stage, label, int(entry.get("records_in", 0)), int(entry.get("records_out", 0)),
                       int(entry.get("records_rejected", 0)), reasons)
        )
    return steps


def _load_stage_records(run_dir: Path, manifest: dict, stage: str) -> list[dict]:
    output = (manifest.get("stages", {}).get(stage) or {}).get("output")
    if not output:
        return []
    path = Path(output)
    if not path.is_absolute() and not path.exists():  # relative to where the run was started
        path = run_dir.parent.parent / path
    return load_records(path) if path.exists() else []


def token_lengths(stage_records: dict[str, list[dict]]) -> dict[str, dict[str, list[int]]]:
    """Before/after lengths of transformed records: tokens where the stage counted them, else words."""
    out: dict[str, dict[str, list[int]]] = {}
    for stage, rows in stage_records.items():
        before, after = [], []
        for row in rows:
            if row.get("tokens_before") is not None and row.get("tokens_after") is not None:
                before.append(int(row["tokens_before"]))
                after.append(int(row["tokens_after"]))
            elif row.get("original_response") is not None and row.get("response") is not None:
                before.append(len(row["original_response"].split()))
                after.append(len(row["response"].split()))
        if before:
            out[stage] = {"before": before, "after": after}
    return out


def training_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars from every TensorBoard event file under the run's ``train`` directory, leaving out those that
    never change (``resumed_from_step`` of a run that never restarted, say): a flat line tells nothing."""
    events = sorted((run_dir / "train").rglob("events.out.tfevents*")) if (run_dir / "train").exists() else []
    if not events:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[tuple[int, float]]] = {}
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            curves.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in curves.items() if len({round(v, 12) for _, v in points}) > 1}


def evaluation(run_dir: Path, manifest: dict) -> dict[str, Any] | None:
    """The eval stage's ``results.json`` (scores of every variant and benchmark, and its manifest)."""
    entry = manifest.get("stages", {}).get("eval") or {}
    path = (entry.get("artifacts") or {}).get("eval_results") or run_dir / "eval" / "results.json"
    data = _json_file(Path(path))
    return data if isinstance(data, dict) and isinstance(data.get("scores"), list) else None


def _json_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def headlines(manifest: dict) -> list[tuple[str, str]]:
    """What each stage found (``StageResult.headlines``), in pipeline order."""
    stages = manifest.get("stages", {})
    order = [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]
    return [(stage, line) for stage in order for line in stages[stage].get("headlines") or []]


def collect(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise InputError("not a run directory (no manifest.json)", str(run_dir))
    manifest = json.loads(manifest_path.read_text())
    transformed = {s: _load_stage_records(run_dir, manifest, s) for s in ("dlcot", "perturb")}
    inspect = [r for rows in transformed.values() for r in rows]
    if not inspect:
        for stage in reversed(STAGE_ORDER):
            inspect = _load_stage_records(run_dir, manifest, stage)
            if inspect and any(r.get("response") for r in inspect):
                break
    return RunData(
        run_dir=run_dir,
        manifest=manifest,
        funnel=funnel(run_dir, manifest),
        token_lengths=token_lengths(transformed),
        curves=training_curves(run_dir),
        evaluation=evaluation(run_dir, manifest),
        inspect_records=inspect,
        headlines=headlines(manifest),
        dlcot_gold=_json_file(run_dir / "dlcot" / "gold.json"),
    )
