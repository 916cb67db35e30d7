"""The sweep's plan, keys, input selection, reference figures and table, as plain functions (fast).

The end-to-end sweep (every variant really trained, evaluated and tabulated on local Ray) is in
``test_sweep_e2e.py``.
"""

from __future__ import annotations

import struct

import pytest

from longcot.config import parse_job
from longcot.errors import ConfigError
from longcot.sweep.config import SweepConfig
from longcot.sweep.stage import select_records
from longcot.sweep.table import load_reference, render_markdown, table_rows, write_table
from longcot.sweep.variants import VariantOutcome, VariantPlan, plan_variants


def test_the_default_grid_is_the_papers():
    names = [v.name for v in plan_variants(SweepConfig())]
    assert names[:4] == ["base", "unperturbed", "dlcot", "wrong_answer"]
    assert "corrupt_digits-20" in names and "corrupt_digits-100" in names
    assert {"shuffle_steps-33", "shuffle_steps-67", "delete_steps-100", "insert_steps-67"} <= set(names)
    assert "remove_keywords-50" in names and len(names) == 20


def test_every_published_average_finds_its_variant():
    reference = load_reference("li2025")
    outcomes = [VariantOutcome(v.name, v.kind, v.ratio, "finished", "k", "d") for v in plan_variants(SweepConfig())]
    matched = {o.name: reference.row_for(o).average for o in outcomes if reference.row_for(o) is not None}
    assert matched["base"] == 56.7 and matched["unperturbed"] == 66.3 and matched["wrong_answer"] == 63.1
    assert matched["corrupt_digits-100"] == 2.7 and matched["corrupt_digits-70"] == 62.0
    assert matched["remove_keywords-100"] == 63.0
    assert (matched["shuffle_steps-100"], matched["delete_steps-100"], matched["insert_steps-100"]) == (56.1, 49.5, 44.5)
    assert matched["shuffle_steps-33"] is None  # not transcribed: unknown, never made up
    assert "dlcot" not in matched  # the paper has no DLCoT row
    assert "arXiv:2502.07374" in reference.source and reference.average_over == [
        "math500", "aime24", "amc23", "olympiadbench"]


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"grid": [{"kind": "shuffle_steps", "ratios": [1.5]}]}, "sweep.grid.0.ratios"),
        ({"grid": [{"kind": "scramble", "ratios": [1.0]}]}, "sweep.grid.0.kind"),
        ({"grid": [{"kind": "corrupt_digits", "ratios": [0.5], "settings": {"max_numbr": 3}}]}, "max_numbr"),
        ({"eval": {"models": [{"name": "x"}]}}, "set by the sweep"),
        ({"grid": [{"kind": "delete_steps", "ratios": [1.0]}, {"kind": "delete_steps", "ratios": [1.0]}]}, "twice"),
        ({"max_concurrent": 0}, "sweep.max_concurrent"),
    ],
)
def test_a_bad_sweep_config_names_the_field(sweep, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_job({"sweep": sweep}, "job.yaml")


def test_variant_keys_follow_settings_and_input(tmp_path):
    config = SweepConfig(grid=[{"kind": "shuffle_steps", "ratios": [0.67]}])
    variant = plan_variants(config)[-1]
    key = VariantPlan.make(variant, config, "in.jsonl", "h1", tmp_path, None).key
    assert VariantPlan.make(variant, config, "elsewhere.jsonl", "h1", tmp_path, None).key == key  # content, not path
    assert VariantPlan.make(variant, config, "in.jsonl", "h2", tmp_path, None).key != key
    faster = config.model_copy(update={"train": config.train.model_copy(update={"learning_rate": 3e-4})})
    assert VariantPlan.make(variant, faster, "in.jsonl", "h1", tmp_path, None).key != key
    plan = VariantPlan.make(variant, config, "in.jsonl", "h1", tmp_path, None)
    # a stable Ray Train run name, so a killed variant resumes from its checkpoint
    assert plan.job["train"]["checkpoints"]["run_name"] == f"shuffle_steps-67-{key}"
    assert plan.job["perturb"] == {**plan.job["perturb"], "kind": "shuffle_steps", "ratio": 0.67}
    assert plan.job["eval"]["models"] == [{"name": "shuffle_steps-67", "model": "@student"}]
    parse_job(plan.job, "variant job")  # a variant's job is an ordinary, valid job


def test_wrong_answer_variant_trains_on_wrong_traces(tmp_path):
    config = SweepConfig(grid=[{"kind": "wrong_answer", "ratios": [1.0]}], dlcot=None)
    wrong = next(v for v in plan_variants(config) if v.kind == "wrong_answer")
    plan = VariantPlan.make(wrong, config, "in.jsonl", "h", tmp_path, None)
    assert plan.job["train"]["data"]["only_correct"] is False and wrong.data == "all"
    base = plan_variants(config)[0]
    assert VariantPlan.make(base, config, None, None, tmp_path, None).job.keys() == {"name", "runs_dir", "eval"}


def test_variants_read_the_records_their_kind_needs():
    rows = [{"id": str(i), "verdict": v} for i, v in enumerate(["correct", "incorrect", "correct", "no_answer",
                                                                  "incorrect", "correct"])]
    config = SweepConfig(grid=[{"kind": "wrong_answer", "ratios": [1.0]}], dlcot=None)
    variants = plan_variants(config)
    assert [r["id"] for r in select_records(rows, "correct", variants, None)] == ["0", "2", "5"]
    assert [r["id"] for r in select_records(rows, "correct", variants, 2)] == ["0", "2"]
    assert [r["id"] for r in select_records(rows, "all", variants, None)] == ["1", "4"]
    replacing = SweepConfig(grid=[{"kind": "wrong_answer", "ratios": [0.5], "settings": {"replace_answers": True}}])
    assert [r["id"] for r in select_records(rows, "all", plan_variants(replacing), 1)] == ["1", "0"]
    assert select_records(rows, "none", variants, None) == []


def score(bench, acc, tokens):
    return {"benchmark": bench, "pass_at_1": acc, "mean_output_tokens": tokens, "variant": "v"}


def outcomes_for_table():
    return [
        VariantOutcome("base", "base", None, "finished", "k1", "d1",
                       scores=[score("math500", 0.25, 100.0), score("gsm8k", 0.5, 50.0)], cached=True),
        VariantOutcome("shuffle_steps-100", "shuffle_steps", 1.0, "finished", "k2", "d2",
                       scores=[score("math500", 0.0, 300.0), score("gsm8k", 0.25, 100.0)]),
        VariantOutcome("delete_steps-33", "delete_steps", 0.33, "failed", "k3", "d3",
                       error="InputError: no record could be trained on"),
        VariantOutcome("insert_steps-33", "insert_steps", 0.33, "finished", "k4", "d4",
                       scores=[score("math500", 0.5, 80.0)]),
    ]


def test_table_has_a_row_per_variant_a_column_per_benchmark_average_tokens_and_the_paper():
    reference = load_reference("li2025")
    rows = table_rows(outcomes_for_table(), ["math500", "gsm8k"], reference)
    text = render_markdown(rows, ["math500", "gsm8k"], reference, {"model": "embedded:x", "records": 8})
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| variant | status | math500 | gsm8k | average | avg output tokens | paper average |"
    assert lines[2] == "| base | cached | 25.0 | 50.0 | 37.5 | 75 | 56.7 |"
    assert lines[3] == "| shuffle_steps-100 | finished | 0.0 | 25.0 | 12.5 | 200 | 56.1 |"
    assert lines[4] == "| delete_steps-33 | failed | failed | failed | failed | - | ? |"
    assert lines[5] == "| insert_steps-33 | finished | 50.0 | - | - | - | ? |"  # no average over a missing benchmark
    assert "## Failed variants" in text and "delete_steps-33: InputError" in text
    assert "arXiv:2502.07374" in text and "compare the trends" in text


def test_write_table_renders_markdown_json_and_a_png(tmp_path):
    paths = write_table(outcomes_for_table(), ["math500", "gsm8k"], load_reference("li2025"), tmp_path, {})
    png = (tmp_path / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 200
    assert paths["results"].endswith("results.json") and (tmp_path / "table.md").read_text().startswith("# Structure")


def test_a_bad_reference_file_names_itself(tmp_path):
    bad = tmp_path / "ref.yaml"
    bad.write_text("source: x\nsetting: y\nbenchmarks: [a]\naverage_over: [a]\nrows:\n  - {label: z, averag: 1}\n")
    with pytest.raises(ConfigError, match=r"ref\.yaml.*rows\.0\.averag"):
        load_reference(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_reference(str(tmp_path / "missing.yaml"))


def test_the_same_records_verified_again_are_the_same_input(tmp_path):
    from longcot import records
    from longcot.sweep.stage import variant_input

    config = SweepConfig(grid=[], dlcot=None)
    row = records.for_sample(records.new_problem("p", source="t"), 0) | {"response": "r", "verdict": "correct"}
    first = [row | {"lineage": [{"stage": "verify", "at": "2026-11-22T01:00:00+00:00", "detail": "{}"}]}]
    again = [first[0] | {"lineage": [{"stage": "verify", "at": "2026-11-22T02:00:00+00:00",
                                      "detail": '{"batch_seconds": 0.004}'}]}]
    path, digest, nothing = variant_input(first, "correct", plan_variants(config), config, tmp_path)
    assert nothing is None
    assert variant_input(again, "correct", plan_variants(config), config, tmp_path) == (path, digest, None)
    changed = [again[0] | {"response": "other"}]
    assert variant_input(changed, "correct", plan_variants(config), config, tmp_path)[1] != digest
    assert variant_input(first, "none", plan_variants(config), config, tmp_path) == (None, None, None)

