"""Real-world data in, nothing lost: any trace file with its extra columns, importers for the open
distillation sets (files written here in each real schema: the hub is out of reach), exports for the
templates users train with, and every bad input explained with one line, per row where it is per row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longcot.generate.imports import ImportConfig, import_rows
from longcot.recordfiles import BadLine, load_records, read_records
from longcot.verify.config import ExportConfig
from longcot.verify.export import conversation, export_records, selected
from conftest import MATH_TRACES, REPO

SKY = "<|begin_of_thought|>\n\nLet me add: 2 + 2 = 4.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n\\boxed{4}\n\n<|end_of_solution|>"
SYSTEM = "Your role as an assistant involves thoroughly exploring questions through a long thinking process."


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def longcot(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "longcot", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


# --------------------------------------------------------------------------- any trace file, columns kept


def test_a_raw_trace_file_reads_as_records_with_its_extra_columns_in_metadata():
    rows = [r for r in read_records(MATH_TRACES) if not isinstance(r, BadLine)]
    assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
    meta = json.loads(rows[0]["metadata"])
    assert {"idx", "benchmark", "original_correct", "original_pred"} <= set(meta) and meta["source_line"] == 1
    assert rows[0]["response"] and rows[0]["reference_answer"]


def test_wrong_types_are_rejected_per_row_never_coerced(tmp_path):
    table = pa.table({"problem": pa.array([1, 2], pa.int64()), "response": ["a", "b"]})
    pq.write_table(table, tmp_path / "ints.parquet")
    items = list(read_records(tmp_path / "ints.parquet"))
    assert all(isinstance(i, BadLine) and "field 'problem': expected text, got int" in i.reason for i in items)
    assert [i.row["problem"] for i in items] == [1, 2]  # the values are kept for the rejected file
    mixed = _jsonl(tmp_path / "mixed.jsonl", [
        {"problem": "P", "response": ["a", "list"]}, {"problem": "Q", "response": "fine", "output_tokens": True},
        {"problem": "R", "response": "fine", "score": 0.9}])
    first, second, good = list(read_records(mixed))
    assert "field 'response': expected text, got list" in first.reason and first.line == 1
    assert "field 'output_tokens': expected an integer, got bool" in second.reason
    assert json.loads(good["metadata"])["score"] == 0.9


def test_a_non_utf8_line_is_rejected_by_number_and_the_rest_is_read(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"problem": "A", "response": "a"}\n{"problem": "\xff\xfe"}\n{"problem": "B", "response": "b"}\n')
    items = list(read_records(path))
    assert [i["problem"] for i in items if isinstance(i, dict)] == ["A", "B"]
    assert [(i.line, i.reason.split(" (")[0]) for i in items if isinstance(i, BadLine)] == [(2, "not UTF-8 text")]


@pytest.mark.slow
def test_verify_dlcot_and_perturb_take_the_same_raw_file_and_keep_its_columns(tmp_path):
    raw = tmp_path / "raw.jsonl"
    lines = MATH_TRACES.read_text().splitlines()[:40]
    raw.write_text("\n".join(lines) + "\n")
    before = raw.read_bytes()
    for stage, extra in (("verify", ["--set", "curate.decontaminate.exclude=[math500]"]), ("dlcot", []),
                         ("perturb", ["--kind", "shuffle_steps", "--ratio", "0.5"])):
        out = tmp_path / f"{stage}.jsonl"
        proc = longcot(stage, "-i", str(raw), "-o", str(out), "--runs-dir", str(tmp_path / "runs"), "--no-progress",
                       *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        kept = load_records(out)
        rejected = [json.loads(x) for x in out.with_name(f"{stage}.rejected.jsonl").read_text().splitlines()]
        assert len(kept) + len(rejected) == 40, stage
        assert kept and all("original_pred" in json.loads(r["metadata"]) for r in kept), stage
    assert raw.read_bytes() == before
    export = tmp_path / "export"
    proc = longcot("export", "-i", str(tmp_path / "verify.jsonl"), "-o", str(export))
    assert proc.returncode == 0 and "incorrect left out" in proc.stdout
    item = json.loads((export / "train.messages.jsonl").read_text().splitlines()[0])
    assert "original_pred" in item["metadata"]


# --------------------------------------------------------------------------- importers, round trips


def _bespoke(i: int) -> dict:
    return {"system": SYSTEM, "conversations": [{"from": "user", "value": f"What is {i} + {i}?"},
                                                {"from": "assistant", "value": SKY}]}


def _openthoughts(i: int) -> dict:
    return {"system": SYSTEM, "source": "numina_math", "conversations": [
        {"from": "human", "value": f"Compute {i} * 2."}, {"from": "gpt", "value": SKY}], "difficulty": 3}


def _messages(i: int, reasoning: bool) -> dict:
    answer = {"role": "assistant", "content": f"The answer is \\boxed{{{2 * i}}}."}
    if reasoning:
        answer["reasoning_content"] = f"I double {i}: {2 * i}."
    return {"messages": [{"role": "system", "content": "Be careful."}, {"role": "user", "content": f"Double {i}."},
                         answer]}


def _round_trip(path: Path, tmp_path: Path, style: str, fmt: str = "messages"):
    items = list(import_rows(path, ImportConfig()))
    records = [i for i in items if not isinstance(i, BadLine)]
    out = tmp_path / f"export-{path.stem}"
    written = export_records(records, ExportConfig(formats=[fmt], style=style), out)
    text = Path(written[fmt]).read_text()
    exported = [json.loads(line) for line in text.splitlines()] if fmt == "messages" else json.loads(text)
    return items, exported


@pytest.mark.parametrize("make", [_bespoke, _openthoughts])
def test_sharegpt_sets_import_and_export_back_to_the_same_conversations(make, tmp_path):
    source = [make(i) for i in range(3)]
    path = _jsonl(tmp_path / "set.jsonl", source)
    items, exported = _round_trip(path, tmp_path, "raw", "sharegpt")
    assert all(isinstance(i, dict) and i["response"] == SKY for i in items)
    for original, back in zip(source, exported):
        assert back["system"] == original["system"]
        assert [t["value"] for t in back["conversations"]] == [t["value"] for t in original["conversations"]]
        extra = {k: v for k, v in original.items() if k not in ("system", "conversations")}
        assert {k: back["metadata"][k] for k in extra} == extra  # the set's own columns come back out


@pytest.mark.parametrize("reasoning", [True, False])
def test_openai_messages_import_and_export_back_to_the_same_messages(reasoning, tmp_path):
    source = [_messages(i, reasoning) for i in range(3)]
    path = _jsonl(tmp_path / "messages.jsonl", source)
    _, exported = _round_trip(path, tmp_path, "reasoning_content" if reasoning else "raw")
    assert [m["messages"] for m in exported] == [m["messages"] for m in source]


def test_r1_columns_a_deepseek_dump_a_datasets_directory_and_parquet(tmp_path):
    import datasets

    r1 = _jsonl(tmp_path / "r1.jsonl", [{"question": "Double 3.", "answer": "<think>\n3 + 3 = 6\n</think>\n\n6",
                                         "gold": "6"}])
    (rec,) = import_rows(r1, ImportConfig.model_validate({"fields": {"problem": "question", "response": "answer",
                                                                    "reference_answer": "gold"}}))
    assert rec["problem"] == "Double 3." and rec["reference_answer"] == "6" and rec["response"].startswith("<think>")
    dump = _jsonl(tmp_path / "deepseek.jsonl", [{"prompt": "Double 4.", "reasoning_content": "4 + 4 = 8",
                                                 "content": "8", "usage": {"completion_tokens": 9}}])
    config = ImportConfig.model_validate({"fields": {"problem": "prompt", "response": "content",
                                                    "reasoning": "reasoning_content"}})
    (rec,) = import_rows(dump, config)
    assert rec["response"] == "<think>\n4 + 4 = 8\n</think>\n\n8" and json.loads(rec["metadata"])["usage"]
    saved = tmp_path / "hfdir"
    datasets.Dataset.from_list([_bespoke(1), _bespoke(2)]).save_to_disk(str(saved))
    assert [r["problem"] for r in import_rows(saved, ImportConfig())] == ["What is 1 + 1?", "What is 2 + 2?"]
    pq.write_table(pa.Table.from_pylist([_messages(5, True)]), tmp_path / "m.parquet")
    (rec,) = import_rows(tmp_path / "m.parquet", ImportConfig())
    assert rec["problem"] == "Double 5." and "<think>" in rec["response"]


def test_rows_that_cannot_be_one_trace_are_rejected_with_their_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [
        _bespoke(1),
        {"system": SYSTEM, "conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"},
                                             {"from": "user", "value": "c"}, {"from": "assistant", "value": "d"}]},
        {"conversations": "not turns"}, "{broken", {"messages": [{"role": "user", "content": "hi"}]}])
    items = list(import_rows(path, ImportConfig()))
    reasons = {i.line: i.reason for i in items if isinstance(i, BadLine)}
    assert set(reasons) == {2, 3, 4, 5} and "only one exchange" in reasons[2] and "malformed JSON" in reasons[4]
    proc = longcot("import", "-i", str(path), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 0 and "5 rows, 1 records" in proc.stdout
    assert len((tmp_path / "out.rejected.jsonl").read_text().splitlines()) == 4


# --------------------------------------------------------------------------- exports


def test_exports_use_the_train_stage_user_turn_and_leave_incorrect_traces_out():
    from longcot import records
    from longcot.train.config import DataSettings
    from longcot.train.examples import chat_messages

    problem = records.new_problem("What is 2 + 2?", source="benchmark:math500", reference_answer="4")
    right = {**records.for_sample(problem, 0), "response": SKY, "correct": True, "verdict": "correct"}
    wrong = {**records.for_sample(problem, 1), "response": SKY, "correct": False, "verdict": "incorrect"}
    config = ExportConfig(formats=["messages"])
    assert conversation(right, config)[:-1] == chat_messages(right, DataSettings())[:-1]
    kept, counts = selected([right, wrong], config)
    assert kept == [right] and counts["incorrect_left_out"] == 1
    assert selected([right, wrong], config.model_copy(update={"include_incorrect": True}))[1]["exported"] == 2
    split = conversation(right, config.model_copy(update={"style": "reasoning_content"}))[-1]
    assert split["reasoning_content"] == "Let me add: 2 + 2 = 4." and split["content"] == "\\boxed{4}"


# --------------------------------------------------------------------------- bad input, one line each


def test_an_output_that_would_overwrite_the_input_is_refused_before_anything_is_written(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(MATH_TRACES.read_text().splitlines()[0] + "\n")
    before = source.read_bytes()
    for args in (["verify", "-i", str(source), "-o", str(source)], ["dlcot", "-i", str(source), "-o", str(source)],
                 ["perturb", "--kind", "delete_steps", "-i", str(source), "-o", str(source)]):
        proc = longcot(*args, "--runs-dir", str(tmp_path / "runs"))
        assert proc.returncode == 2 and "is the input file" in proc.stderr and "Traceback" not in proc.stderr, args
    assert source.read_bytes() == before and not (tmp_path / "runs").exists()
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem": "P", "response": SKY}]), parts / "part-0.parquet")
    proc = longcot("verify", "-i", str(parts), "-o", str(parts / "out.jsonl"), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "inside the input" in proc.stderr


def test_empty_input_unwritable_output_and_a_missing_job_input_get_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = longcot("verify", "-i", str(empty), "-o", str(tmp_path / "o.jsonl"), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 3 and "holds no records" in proc.stderr and "Traceback" not in proc.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")  # nothing, not even root, can make a directory under a file
    proc = longcot("verify", "-i", str(MATH_TRACES), "-o", str(tmp_path / "o.jsonl"), "--runs-dir", str(blocked / "r"))
    assert proc.returncode == 2 and "a-file" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = longcot("verify", "-i", str(MATH_TRACES), "-o", str(blocked / "o.jsonl"), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "a-file" in proc.stderr and "Traceback" not in proc.stderr
    job = tmp_path / "job.yaml"
    job.write_text(f"name: j\nruns_dir: {tmp_path / 'runs'}\ndlcot:\n  input: {tmp_path / 'nope.jsonl'}\n")
    proc = longcot("run", str(job))
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 3 and "nope.jsonl" in error and "(dlcot.input)" in error
    assert "Traceback" not in proc.stderr


def test_run_directories_are_unique_even_when_created_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from longcot.rundir import RunDir

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: RunDir.create(tmp_path, "job", "abcdef012345").path, range(8)))
    assert len(set(dirs)) == 8 and all(d.is_dir() for d in dirs)


# --------------------------------------------------------------------------- fuzz: corrupted real files


def _corrupt(lines: list[str], seed: int) -> list[bytes]:
    """Real trace lines, about half of them broken in one seeded way each."""
    import random

    rng = random.Random(seed)
    out = []
    for line in lines:
        row = json.loads(line)
        kind = rng.choice(["keep", "keep", "cut", "flip", "wrong_type", "extra", "missing", "huge", "empty"])
        if kind == "cut":
            out.append(line[: rng.randrange(1, len(line))].encode())
        elif kind == "flip":
            data = bytearray(line.encode())
            for _ in range(3):
                data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data).replace(b"\n", b" "))
        else:
            if kind == "wrong_type":
                row[rng.choice(["problem", "response", "reference_answer"])] = rng.choice([7, ["a"], {"b": 1}, True])
            elif kind == "extra":
                row[f"col_{rng.randrange(100)}"] = rng.choice([1.5, "text", None, [1, 2], {"nested": {"x": 1}}])
            elif kind == "missing":
                row.pop(rng.choice(["problem", "response", "reference_answer"]))
            elif kind == "huge":
                row["response"] = row["response"] + " pad" * 50_000
            elif kind == "empty":
                row[rng.choice(["problem", "response", "reference_answer"])] = ""
            out.append(json.dumps(row).encode())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_real_trace_files_through_every_stage_lose_nothing(ray_local, tmp_path, seed):
    import os

    source = tmp_path / "fuzzed.jsonl"
    source.write_bytes(b"\n".join(_corrupt(MATH_TRACES.read_text().splitlines()[:40], seed)) + b"\n")
    before = source.read_bytes()
    lines = sum(1 for line in before.split(b"\n") if line.strip())
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    stages = {"verify": ["--set", "curate.decontaminate.exclude=[math500]"], "dlcot": [],
              "perturb": ["--kind", "delete_steps", "--ratio", "0.5"], "import": []}
    for stage, extra in stages.items():
        out = tmp_path / f"{stage}.jsonl"
        args = [sys.executable, "-m", "longcot", stage, "-i", str(source), "-o", str(out), *extra]
        if stage != "import":
            args += ["--runs-dir", str(tmp_path / "runs"), "--no-progress"]
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (stage, proc.stderr[-3000:])
        kept = len(out.read_text().splitlines())
        rejected = out.with_name(f"{stage}.rejected.jsonl")
        rejects = len(rejected.read_text().splitlines()) if rejected.exists() else 0
        assert kept + rejects == lines, (stage, kept, rejects, lines)
    assert source.read_bytes() == before
