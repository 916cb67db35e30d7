"""``longcot eval``: score models (generated now) or saved responses on benchmarks, side by side.

``longcot eval-report``: combine the ``results.json`` of earlier evaluations into one report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import (
    ConfigFile,
    MaxTokens,
    NoProgress,
    Samples,
    Seed,
    SetPairs,
    Temperature,
    out,
    overrides,
    print_result,
    stage_config,
)
from longcot.errors import ConfigError


def _named(value: str, position: int, prefix: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE); a bare VALUE gets ``PREFIX`` (plus a number after the first)."""
    name, sep, rest = value.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, rest
    return (prefix if position == 0 else f"{prefix}{position + 1}"), value


def _models(model: list[str], adapter: list[str]) -> list[dict]:
    entries = [dict(zip(("name", "model"), _named(m, i, "model"))) for i, m in enumerate(model)]
    by_name = {e["name"]: e for e in entries}
    for a in adapter:
        name, path = _named(a, 0, "")
        if not name and len(entries) > 1:
            raise ConfigError(f"--adapter {a!r}: with several models, write NAME=PATH")
        name = name or entries[0]["name"]  # a bare PATH: the one model's
        if name not in by_name:
            raise ConfigError(f"--adapter {a!r}: no --model named {name!r}")
        by_name[name]["adapter"] = path
    return entries


def _responses(responses: list[str], benchmark: Optional[str]) -> list[dict]:
    named = (_named(value, 0, "") for value in responses)
    return [{"name": name or Path(path).stem, "path": path, "benchmark": benchmark or None} for name, path in named]


@app.command("eval")
def eval_command(
    benchmark: Optional[list[str]] = typer.Option(None, "--benchmark", "-b", help="Registry benchmark; repeat for several."),
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="[NAME=]MODEL to generate with; repeat to compare."),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="[NAME=]PATH of a PEFT adapter for a model."),
    responses: Optional[list[str]] = typer.Option(
        None, "--responses", "-r", help="[NAME=]FILE of saved responses to re-score (no generation); repeat, names may repeat."
    ),
    responses_benchmark: Optional[str] = typer.Option(None, help="Benchmark of every --responses row (default: per row)."),
    heldout: Optional[str] = typer.Option(
        None, "--heldout", help="Held-out teacher traces (a record file, e.g. a train run's heldout.jsonl): every model "
        "answers their problems and is scored on them (heldout_nll, structure_rate), paired with the first model."),
    limit: Optional[int] = typer.Option(None, help="Problems per benchmark."),
    n: Samples = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    seed: Seed = None,
    backend: Optional[str] = typer.Option(None, help="hf | vllm | openai"),
    k: Optional[list[int]] = typer.Option(None, "--k", help="pass@k to report; repeat."),
    token_counter: Optional[str] = typer.Option(None, help="Tokenizer (model ref) that counts tokens rows lack."),
    no_charts: bool = typer.Option(False, "--no-charts", help="Skip the PNG charts."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report directory (default: in a new run directory)."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    no_progress: NoProgress = False,
) -> None:
    """Evaluate models and/or saved responses; writes report.md, results.json, a chart and manifest.json."""
    from longcot.eval.config import EvalConfig
    from longcot.pipeline import run_single_stage

    flags: dict = {
        # --heldout alone evaluates on the held-out problems only
        "benchmarks": benchmark or ([] if heldout else None), "limit": limit, "k": k or None,
        "token_counter": token_counter, "charts": False if no_charts else None,
        "generate": {"sampling": {"n": n, "max_tokens": max_tokens, "temperature": temperature, "seed": seed},
                     "backend": backend or None},
        "responses": _responses(responses, responses_benchmark) if responses else None,
        "heldout": {"records": heldout} if heldout else None,
    }
    if model:
        flags["models"] = _models(model, adapter or [])
    elif adapter:
        raise ConfigError("--adapter needs a --model")
    cfg = stage_config(EvalConfig, "eval", config, overrides(set_, flags))
    records_path = str(output / "records.jsonl") if output else None
    run_dir, result = run_single_stage("eval", cfg, input_path=None, output=records_path, progress=not no_progress)
    report = Path(result.summary["files"]["report"])
    out.print(_accuracy_section(report.read_text(encoding="utf-8")), highlight=False)
    print_result(run_dir, result)
    for kind, path in sorted(result.summary["files"].items()):
        out.print(f"{kind}: {path}", highlight=False)


@app.command("eval-report")
def eval_report_command(
    results: list[Path] = typer.Argument(..., help="results.json files of earlier evaluations."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the combined report."),
    title: str = typer.Option("Evaluation", help="Report title."),
    no_charts: bool = typer.Option(False, "--no-charts", help="Skip the PNG charts."),
) -> None:
    """Put several evaluations side by side in one report (variants keep their names; later files win)."""
    from longcot.eval.report import combine_results, write_report

    scores, manifest = combine_results(results)
    paths = write_report(scores, output, manifest, charts=not no_charts, title=title)
    out.print(_accuracy_section(Path(paths["report"]).read_text(encoding="utf-8")), highlight=False)
    for kind, path in sorted(paths.items()):
        out.print(f"{kind}: {path}", highlight=False)


def _accuracy_section(markdown: str) -> str:
    """The held-out measures (when measured), accuracy and token tables of a report, for the terminal."""
    sections = ["## " + s for s in markdown.split("\n## ")[1:]]
    wanted = ("## Held-out measures", "## Accuracy", "## Mean output tokens")
    return "\n\n".join(s for s in sections if s.startswith(wanted))


@app.command("eval-check")
def eval_check_command(
    benchmark: Optional[list[str]] = typer.Argument(None, help="Registry benchmarks (default: all)."),
    sample: Optional[int] = typer.Option(None, help="Check this many random problems per benchmark instead of all."),
    seed: int = typer.Option(0, help="Seed of the sample and of the shuffle."),
    benchmark_dir: Optional[list[str]] = typer.Option(None, "--benchmark-dir", help="Extra registry directory."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results (with failures) here."),
) -> None:
    """Check scoring by construction: references must score 100%, shuffled references near chance."""
    from longcot.eval.selfcheck import check_benchmark
    from longcot.problems.benchmarks import load_registry, spec_of

    registry = load_registry(benchmark_dir or None)
    specs = [spec_of(registry, name) for name in benchmark or sorted(registry)]
    line = "{:<16} {:>8} {:>12} {:>10} {:>8} {:>8}  {}"
    out.print(line.format("benchmark", "problems", "references %", "shuffled %", "chance %", "seconds", "ok"))
    results = []
    for spec in specs:  # one line per benchmark as it finishes (a full check takes minutes)
        check = check_benchmark(spec, sample=sample, seed=seed)
        results.append(check.model_dump())
        out.print(line.format(spec.name, check.problems, f"{100 * check.reference_accuracy:.1f}",
                              f"{100 * check.shuffled_accuracy:.1f}", f"{100 * check.chance:.1f}",
                              f"{check.seconds:.0f}", "[green]yes[/]" if check.ok else "[red]NO[/]"), highlight=False)
        for failure in check.failures[:5]:
            out.print(f"  {spec.name}: reference {failure['reference_answer']!r} scored {failure['verdict']} "
                      f"(extracted {failure['predicted_answer']!r})", highlight=False)
    if json_out:
        json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
