"""Eval reports: the papers' table shape in markdown, every number in JSON, PNG charts; combining runs."""

from __future__ import annotations

import json

import pytest

from longcot.errors import InputError
from longcot.eval.metrics import BenchmarkScore
from longcot.eval.report import combine_results, load_scores, paper_table, write_report


def score(variant: str, bench: str, acc: float, tokens: float, **extra) -> BenchmarkScore:
    return BenchmarkScore(variant=variant, benchmark=bench, problems=10, samples=40, samples_per_problem=4,
                          pass_at_1=acc, pass_at_k={"pass@4": min(1.0, acc + 0.2)}, maj_at_n=acc,
                          mean_output_tokens=tokens, mean_thought_tokens=tokens * 0.8, **extra)


SCORES = [score("base", "gsm8k", 0.25, 300), score("base", "math500", 0.1, 700),
          score("student", "gsm8k", 0.5, 200), score("student", "math500", 0.3, 500)]


def test_paper_table_has_variants_as_rows_and_benchmarks_as_columns():
    table = paper_table(SCORES).splitlines()
    assert table[0] == "| variant | gsm8k | math500 | average |"
    assert table[2] == "| base | 25.0 | 10.0 | 17.5 |"
    assert table[3] == "| student | 50.0 | 30.0 | 40.0 |"
    tokens = paper_table(SCORES, "mean_output_tokens").splitlines()
    assert tokens[2] == "| base | 300 | 700 | 500 |"


def test_average_is_left_out_when_a_benchmark_is_missing():
    table = paper_table(SCORES + [score("teacher", "gsm8k", 0.9, 900)]).splitlines()
    assert table[4] == "| teacher | 90.0 | - | - |"


def test_write_report_writes_markdown_json_and_a_png(tmp_path):
    manifest = {"versions": {"longcot": "0.1.0", "torch": "2.13"},
                "variants": {"base": {"kind": "model", "model": "embedded:x", "backend": "hf", "dtype": "float32",
                                      "sampling": {"n": 4, "temperature": 0.7, "seed": 0}}}}
    paths = write_report(SCORES, tmp_path, manifest)
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Accuracy (pass@1, %)", "## Mean output tokens", "## Mean thought tokens", "## Details"):
        assert heading in md
    assert "| student | gsm8k | 10 | 4 | 50.0 | 70.0 | 50.0 | 200 | 160 |" in md
    assert "temperature=0.7" in md and "torch 2.13" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["manifest"] == manifest and len(data["scores"]) == 4
    png = (tmp_path / "accuracy_vs_tokens.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(paths["chart"]).shape[:2]
    assert width > 400 and height > 300
    back, back_manifest = load_scores(paths["results"])
    assert back == SCORES and back_manifest == manifest


def test_combining_results_puts_runs_side_by_side(tmp_path):
    write_report(SCORES[:2], tmp_path / "a", {"variants": {"base": {"kind": "model"}}}, charts=False)
    write_report(SCORES[2:], tmp_path / "b", {"variants": {"student": {"kind": "model"}}}, charts=False)
    scores, manifest = combine_results([tmp_path / "a" / "results.json", tmp_path / "b" / "results.json"])
    assert scores == SCORES
    assert set(manifest["variants"]) == {"base", "student"} and len(manifest["sources"]) == 2
    assert not (tmp_path / "a" / "accuracy_vs_tokens.png").exists()


def test_a_file_that_is_not_results_json_is_an_input_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(InputError, match="x.json: not an eval results.json"):
        load_scores(bad)
