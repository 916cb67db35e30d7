"""`longcot run jobs/quickstart.yaml`, as a user runs it: every stage on the embedded model, one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longcot.recordfiles import read_records

pytestmark = pytest.mark.slow


def _records(path: str) -> list[dict]:
    return [r for r in read_records(path) if isinstance(r, dict)]


def test_quickstart_runs_every_stage_and_loses_no_record(quickstart_run: Path):
    manifest = json.loads((quickstart_run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert set(manifest["stages"]) == {"problems", "generate", "verify", "dlcot", "train", "eval", "serve"}
    assert manifest["versions"]["ray"].startswith("2.60") and manifest["versions"]["torch"].startswith("2.13")
    assert len(manifest["config_hash"]) == 12 and manifest["config"]["name"] == "quickstart"
    assert any(p.endswith("gsm8k.jsonl") for p in manifest["inputs"])
    assert any(p.endswith("math500_sky-t1-27b.jsonl") for p in manifest["inputs"])
    stages = manifest["stages"]
    for stage in ("problems", "verify", "dlcot", "train"):
        entry = stages[stage]
        assert entry["records_in"] == entry["records_out"] + entry["records_rejected"], stage

    # teacher rollouts: 8 problems x 2 samples, each a real completion of the embedded model
    assert stages["problems"]["records_out"] == 8
    samples = _records(stages["generate"]["output"])
    assert len(samples) == 16 == len({s["id"] for s in samples})
    assert all(s["response"].strip() and s["finish_reason"] in ("stop", "length") for s in samples)
    assert stages["generate"]["summary"]["error"] == 0

    # verification: every sample has a verdict; what was dropped is in the rejected file with its reason
    verdicts = stages["verify"]["summary"]["verdicts"]
    assert sum(verdicts.values()) == 16
    kept = _records(stages["verify"]["output"])
    assert all(r["verdict"] in ("correct", "incorrect") for r in kept)

    # DLCoT on the 500 shared traces: simplified traces carry their segments, and are shorter
    dlcot = stages["dlcot"]
    assert dlcot["records_in"] == 500 and dlcot["summary"]["transformed"] == dlcot["records_out"] > 100
    simplified = _records(dlcot["output"])
    assert all(r["segments"] and r["tokens_after"] <= r["tokens_before"] for r in simplified)
    assert sum(r["tokens_after"] for r in simplified) < sum(r["tokens_before"] for r in simplified)

    # LoRA on 2 workers: an adapter, a loss history, TensorBoard logs
    train = stages["train"]["summary"]
    assert train["global_step"] == 12 and train["examples"] == dlcot["records_out"]
    adapter = Path(stages["train"]["artifacts"]["student_adapter"])
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()
    assert list((quickstart_run / "train" / "tensorboard").rglob("events.out.tfevents.*"))

    # base and student answered the same GSM8K problems the same way
    scores = stages["eval"]["summary"]["scores"]
    assert {(s["variant"], s["benchmark"]) for s in scores} == {("base", "gsm8k"), ("student", "gsm8k")}
    assert all(s["problems"] == 4 for s in scores)

    # the served student answered the official client, plain and streamed, then shut down
    serve = stages["serve"]["summary"]
    assert serve["mode"] == "smoke_test" and serve["content"].strip() and serve["completion_tokens"] > 0
    assert serve["stream"]["content"] == serve["content"] and serve["stream"]["chunks"] > 1

    assert (quickstart_run / "report.html").exists() and (quickstart_run / "inspector.html").exists()
