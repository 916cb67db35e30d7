"""The run report and the trace inspector in real headless Chromium (Debian's chromium + chromedriver).

Two real runs feed it: the quickstart (a funnel over every stage, DLCoT segments on the shared Sky-T1
traces) and a perturbation run on the shared AIME traces (a shuffled 143,000-character trace shown as a
diff). Screenshots of both pages land in test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from longcot.recordfiles import read_records
from longcot.report.render import inspector_entry
from conftest import AIME_TRACES, run_longcot

# the first test here runs the whole quickstart in its setup (10.5 min on a quiet 2-core machine,
# longer when the cores are shared): more room than the suite-wide 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()) or not shutil.which("chromedriver"):
        pytest.fail("the report's browser test needs Debian's chromium and chromium-driver: run `bash .ci/system-deps`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _stage_records(run_dir: Path, manifest: dict, stage: str) -> list[dict]:
    return [r for r in read_records(manifest["stages"][stage]["output"]) if isinstance(r, dict)]


def _no_network_fetches(driver) -> None:
    """Every resource the page loaded is inline (data: URIs) or the page file itself."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(("data:", "file:")) for u in urls), urls


def test_report_funnel_matches_the_manifest(browser, quickstart_run, artifacts_dir):
    from selenium.webdriver.common.by import By

    manifest = json.loads((quickstart_run / "manifest.json").read_text())
    browser.get((quickstart_run / "report.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.funnel-row")
    shown = {r.get_attribute("data-stage"): r for r in rows}
    assert {"problems", "generate", "verify", "dlcot", "train", "eval"} <= set(shown)
    for stage, row in shown.items():
        entry = manifest["stages"][stage]
        cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td.num")]
        assert cells == [str(entry["records_in"]), str(entry["records_out"]), str(entry["records_rejected"])], stage
    # losses carry their reasons: every stage that lost records lists at least one
    for stage, row in shown.items():
        if manifest["stages"][stage]["records_rejected"]:
            assert row.find_elements(By.CSS_SELECTOR, "ul.reasons li"), stage
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(i.get_attribute("src").startswith("data:image/png") for i in images)
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    _no_network_fetches(browser)
    browser.save_screenshot(str(artifacts_dir / "report.png"))


def test_inspector_draws_the_longest_segmented_trace_as_its_segments(browser, quickstart_run, artifacts_dir):
    from selenium.webdriver.common.by import By

    manifest = json.loads((quickstart_run / "manifest.json").read_text())
    segmented = [r for r in _stage_records(quickstart_run, manifest, "dlcot") if r.get("segments")]
    assert segmented, "the quickstart's DLCoT stage segmented no trace"
    record = max(segmented, key=lambda r: len(r.get("original_response") or r["response"]))
    segments = sorted(record["segments"], key=lambda s: s["start"])
    assert any(not s["kept"] for s in segments), "the longest segmented trace lost nothing to DLCoT"

    browser.get((quickstart_run / "inspector.html").as_uri() + "#" + record["id"])
    assert browser.find_element(By.ID, "record-id").text == record["id"]
    assert browser.find_element(By.ID, "thought").get_attribute("data-mode") == "segments"
    spans = browser.find_elements(By.CSS_SELECTOR, "#thought span.seg")
    assert len(spans) == len(segments)
    legend = {
        el.text: el.value_of_css_property("background-color")
        for el in browser.find_elements(By.CSS_SELECTOR, "p.meta span.seg") if el.text != "pruned"
    }
    assert len(set(legend.values())) == len(legend) == 5  # five kinds, five colours
    thought = inspector_entry(record)["thought"]
    for span, seg in zip(spans, segments):
        assert span.get_attribute("data-kind") == seg["kind"]
        assert span.value_of_css_property("background-color") == legend[seg["kind"]]
        decoration = span.value_of_css_property("text-decoration-line")
        assert ("line-through" in decoration) == (not seg["kept"]), seg
        if not seg["kept"]:
            assert span.get_attribute("title") == seg["reason"] and seg["reason"]
        if seg.get("label"):
            assert span.get_attribute("data-label") == seg["label"]
            assert span.find_elements(By.CSS_SELECTOR, f"span.badge.{seg['label']}")
        body = thought[seg["start"]:seg["end"]]
        assert span.get_attribute("textContent").endswith(body)

    search = browser.find_element(By.ID, "search")
    search.send_keys(record["id"][:10])
    assert [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#list li")] == [record["id"]]
    first_pruned = browser.find_element(By.CSS_SELECTOR, "#thought span.seg.pruned")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first_pruned)
    browser.save_screenshot(str(artifacts_dir / "inspector-segments.png"))


@pytest.fixture(scope="module")
def perturbed_run(tmp_path_factory) -> Path:
    """A real run: the 30 shared AIME traces imported, then every one of them with its steps shuffled."""
    root = tmp_path_factory.mktemp("perturbed")
    job = root / "job.yaml"
    job.write_text(
        "name: shuffled-aime\n"
        "ray: {num_cpus: 2, object_store_memory_mb: 512}\n"
        "problems:\n  sources:\n"
        f"    - {{kind: file, path: {AIME_TRACES}, fields: {{problem: problem, answer: reference_answer, "
        "response: response, id: idx}}\n"
        "perturb: {kind: shuffle_steps, ratio: 1.0, seed: 3}\n"
    )
    return run_longcot(job, root / "runs")


def test_inspector_shows_a_shuffled_long_trace_as_a_diff_quickly(browser, perturbed_run, artifacts_dir):
    from selenium.webdriver.common.by import By

    manifest = json.loads((perturbed_run / "manifest.json").read_text())
    rows = _stage_records(perturbed_run, manifest, "perturb")
    longest = max(rows, key=lambda r: len(r["original_response"]))
    assert len(longest["original_response"]) > 90_000 and longest["response"] != longest["original_response"]

    browser.get((perturbed_run / "inspector.html").as_uri())
    item = browser.find_element(By.CSS_SELECTOR, f"#list li[data-id='{longest['id']}']")
    t0 = time.perf_counter()
    item.click()
    assert browser.find_element(By.ID, "record-id").text == longest["id"]
    drawn_s = time.perf_counter() - t0
    box = browser.find_element(By.ID, "thought")
    assert box.get_attribute("data-mode") == "diff"
    assert box.find_elements(By.CSS_SELECTOR, "span.diff-del") and box.find_elements(By.CSS_SELECTOR, "span.diff-ins")
    # the diff keeps both sides: dropping the insertions gives back the original text
    original = browser.execute_script(
        "const b = arguments[0].cloneNode(true); b.querySelectorAll('.diff-ins').forEach(n => n.remove());"
        "return b.textContent;", box)
    assert original == longest["original_response"]
    assert drawn_s < 10, f"drawing a {len(longest['original_response'])}-character diff took {drawn_s:.1f}s"
    (artifacts_dir / "inspector-timing.json").write_text(json.dumps(
        {"chars": len(longest["original_response"]), "click_to_drawn_s": round(drawn_s, 3)}))
    browser.save_screenshot(str(artifacts_dir / "inspector-diff.png"))
