"""The openai backend against a slow, flaky remote teacher (``flaky_teacher.FlakyTeacher``): long-tailed
latencies, 429s with Retry-After, 5xx, connections shut half way, reasoning_content. The pure parts of the
client and of the teacher's log are specified first; then the client against the real server; then (slow)
``longcot generate`` on local Ray, killed part way and resumed."""

from __future__ import annotations

import email.utils
import json
import threading
import time

import pytest
from flaky_teacher import (Event, FlakyTeacher, Weather, fate, generate_argv, key_of_record, peak_per_second,
                           resent_after_resume, retry_after_margins, run_generate, split_at, tally,
                           wait_for_workers_gone, write_problems)

from longcot.generate.backend import Completion
from longcot.generate.config import OpenAISettings
from longcot.generate.openai import OpenAIClient, RateLimiter, ResponseCache, estimated_tokens, request_key, retry_delay

# A teacher fast enough for tests, with every kind of trouble more often than a real one has it.
STORMY = Weather(latency_median_s=0.05, latency_sigma=0.6, slow_rate=0.02, slow_s=(0.3, 0.8), rate_limited=0.08,
                 retry_after_s=(0.2, 0.4), server_errors=0.05, dropped=0.04, reasoning_words=20)


def prompt(i: int) -> str:
    return json.dumps([{"role": "user", "content": f"Problem {i:05d}: what is {i} + 1?"}])


# --- pure parts ---------------------------------------------------------------------------------------


def test_retry_after_reads_milliseconds_seconds_and_dates():
    client = OpenAIClient(OpenAISettings(api_key_env=None), "teacher")
    retry_after_s = client._sdk.retry_after
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "0.5"}) == 0.5  # not standard, but servers send it
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}) == 0.25  # OpenAI's precise header wins
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= retry_after_s({"retry-after": date}) <= 10.0  # the date has whole seconds
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    assert retry_after_s({"retry-after": "-4"}) == 0.0
    client.close()


def test_retry_delay_never_shortens_what_the_server_asked():
    assert retry_delay(1, 1.0, 5.0, retry_after=12.0) == 12.0  # max_backoff_s caps our backoff, not the server's
    assert retry_delay(1, 1.0, 60.0, retry_after=0.0) == 0.0
    assert 2.0 <= retry_delay(3, 1.0, 60.0) <= 4.0  # doubling, jittered between half and all of it
    assert retry_delay(12, 1.0, 5.0) <= 5.0


def test_rate_limiter_spaces_units_evenly_across_threads():
    limiter = RateLimiter(50)  # 50 units a second: 20 ms a unit
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(5)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 19 / 50 - 0.01  # the 20th unit starts 19 intervals after the first


def test_rate_limiter_charges_a_costly_request_to_the_ones_after_it():
    tokens = RateLimiter(1000)  # 1,000 tokens a second
    started = time.monotonic()
    tokens.acquire(300)  # starts at once...
    first = time.monotonic() - started
    tokens.acquire(1)  # ...and holds the next one back by 0.3 s
    assert first < 0.05 and time.monotonic() - started >= 0.29


def test_estimated_tokens_count_the_prompt_and_all_of_max_tokens():
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": [{"type": "text", "text": "y" * 41}]}]
    assert estimated_tokens(messages, max_tokens=100) == 21 + 100  # ceil(81 / 4) + 100


def test_request_key_is_stable_and_names_everything_that_decides_the_answer():
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "seed": 1, "markers": "think"}
    assert request_key("m", body) == request_key("m", dict(reversed(list(body.items()))))
    assert len({request_key("m", body), request_key("other", body), request_key("m", {**body, "seed": 2}),
                request_key("m", {**body, "markers": "sky"})}) == 4


def test_response_cache_is_read_back_by_a_later_run_and_skips_a_half_written_line(tmp_path):
    first = ResponseCache(tmp_path)
    first.put("a", Completion("<think>\nx\n</think>\n\n4", 10, 5, "stop"))
    first.put("b", Completion("", 10, 8, "length"))
    first.put("c", Completion.failed("HTTP 503: busy"))  # a failure is not an answer: sent again next time
    first.close()
    (tmp_path / "killed-writer.jsonl").write_text('{"key": "d", "text": "half')  # killed inside write()
    later = ResponseCache(tmp_path)
    assert len(later) == 2 and later.get("c") is None and later.get("d") is None
    a = later.get("a")
    assert (a.text, a.prompt_tokens, a.output_tokens, a.finish_reason, a.attempts) == \
        ("<think>\nx\n</think>\n\n4", 10, 5, "stop", 0)
    assert later.get("b").finish_reason == "length"


def test_the_teachers_fates_are_reproducible_and_as_frequent_as_asked():
    assert fate(STORMY, "k", 0)[0] == fate(STORMY, "k", 0)[0]
    outcomes = [fate(STORMY, f"k{i}", 0)[0] for i in range(4000)]
    assert abs(outcomes.count("rate_limited") / 4000 - 0.08) < 0.015
    assert abs(outcomes.count("dropped") / 4000 - 0.04) < 0.01


def test_the_log_shows_early_retries_peaks_and_resends():
    log = [Event("a", 0.0, 0.1, "rate_limited", 429, 1.0), Event("a", 1.2, 1.3, "answered", 200),
           Event("b", 0.0, 0.1, "rate_limited", 429, 1.0), Event("b", 0.5, 0.6, "answered", 200)]
    assert [round(m, 2) for m in retry_after_margins(log)] == [0.1, -0.6]  # b came back 0.6 s early
    assert peak_per_second([0.0, 0.1, 0.5, 0.99, 1.0, 2.5]) == 4
    before = [Event("a", 0, 1, "answered", 200), Event("b", 0, 1, "answered", 200), Event("c", 0, 1, "answered", 200)]
    after = [Event("b", 5, 6, "answered", 200), Event("d", 5, 6, "answered", 200)]
    assert resent_after_resume(before, after, committed={"a"}) == \
        {"committed": 1, "committed_resent": 0, "answered_uncommitted": 2, "answered_resent": 1}
    late_reply_to_a_dead_worker = Event("c", 3, 9, "unwritten", 200)
    assert split_at(before + after + [late_reply_to_a_dead_worker], 4) == (before + [late_reply_to_a_dead_worker], after)


# --- the client against the real server ------------------------------------------------------------------


def test_every_prompt_is_answered_through_the_storm_and_retry_after_is_honoured():
    with FlakyTeacher(STORMY) as teacher:
        client = OpenAIClient(OpenAISettings(base_url=teacher.url, qps=60, max_in_flight=24, max_retries=10,
                                             backoff_s=0.05, timeout_s=20), "teacher")
        out = client.generate([prompt(i) for i in range(150)], max_tokens=32, seed=list(range(150)))
        client.close()
        t = tally(teacher.events())
    assert [o.finish_reason for o in out].count("error") == 0 and len(out) == 150
    assert all(o.text.startswith("<think>\nLet me think.") for o in out)  # reasoning_content put back in front
    assert t["rate_limited"] and t["server_error"] and t["dropped"], t  # the storm did hit
    assert t["retry_after_checked"] == t["rate_limited"] and t["retry_after_early"] == 0, t
    assert t["keys_answered"] == 150 and t["keys_answered_twice"] == 0
    assert sum(o.attempts for o in out) == t["arrivals"]  # every attempt counted in the records


def test_a_retry_after_longer_than_max_backoff_ends_the_request_at_once():
    always_429 = Weather(rate_limited=1.0, retry_after_s=(30.0,), retry_after_ms_share=0.0)
    with FlakyTeacher(always_429) as teacher:
        client = OpenAIClient(OpenAISettings(base_url=teacher.url, qps=50, max_retries=5, max_backoff_s=2.0), "teacher")
        (out,) = client.generate([prompt(0)], max_tokens=8)
        client.close()
        arrivals = len(teacher.events())
    assert out.finish_reason == "error" and out.attempts == 1 and arrivals == 1
    assert out.error == "HTTP 429: rate limit reached (the server asks to wait 30s, more than max_backoff_s=2)"


def test_a_resumed_client_takes_answers_from_the_cache_instead_of_sending_again(tmp_path):
    calm = Weather(latency_median_s=0.02, slow_rate=0.0, rate_limited=0.0, server_errors=0.0, dropped=0.0)
    prompts = [prompt(i) for i in range(12)]
    with FlakyTeacher(calm) as teacher:
        cached = OpenAISettings(base_url=teacher.url, qps=100, response_cache=str(tmp_path))
        first = OpenAIClient(cached, "teacher")
        sent = first.generate(prompts[:8], max_tokens=16, seed=7)  # then the run is killed
        first.close()
        again = OpenAIClient(cached, "teacher")
        resumed = again.generate(prompts, max_tokens=16, seed=7)
        again.close()
        keys = [e.key for e in teacher.events()]
    assert len(keys) == 12 == len(set(keys))  # the 8 answered before were not asked for again
    assert [c.text for c in resumed[:8]] == [c.text for c in sent]
    assert [c.attempts for c in resumed] == [0] * 8 + [1] * 4


def test_a_tokens_per_minute_limit_spaces_long_requests():
    calm = Weather(latency_median_s=0.01, slow_rate=0.0, rate_limited=0.0, server_errors=0.0, dropped=0.0)
    with FlakyTeacher(calm) as teacher:
        # 12,000 tokens a minute = 200 a second; each request counts about 6 + 94 = 100 tokens: 0.5 s apart
        client = OpenAIClient(OpenAISettings(base_url=teacher.url, qps=100, tpm=12_000, max_in_flight=4), "teacher")
        client.generate([prompt(i) for i in range(4)], max_tokens=94)
        client.close()
        arrivals = sorted(e.arrived for e in teacher.events())
    assert arrivals[-1] - arrivals[0] >= 3 * 0.5 - 0.05


# --- the stage, killed and resumed -----------------------------------------------------------------------


@pytest.mark.slow
def test_generate_killed_part_way_resumes_with_nothing_lost_duplicated_or_resent(ray_local, tmp_path):
    """``longcot generate`` (CLI, its driver on the session's local Ray) against the stormy teacher, SIGKILLed
    once 40% of the requests are answered, then run again: every record once, no 429 retried early, and no
    request of a record already written is sent again."""
    from longcot.recordfiles import load_records

    count = 240
    problems = write_problems(tmp_path / "problems.jsonl", count)
    output = tmp_path / "samples.jsonl"
    settings = {"model": "teacher", "batch_size": 8, "resources": {"num_cpus": 0.5}, "system_prompt": "",
                "sampling": {"max_tokens": 64, "temperature": 0.6},
                "openai": {"qps": 30, "max_in_flight": 16, "api_key_env": None, "max_retries": 10, "backoff_s": 0.1,
                           "timeout_s": 20}}
    address = ray_local.get_runtime_context().gcs_address
    with FlakyTeacher(STORMY) as teacher:
        argv = generate_argv(problems, output, tmp_path / "runs", teacher.url, settings)
        first = run_generate(argv, ray_address=address, timeout_s=300, kill_when=lambda: sum(
            e.outcome == "answered" for e in teacher.events()) >= 0.4 * count)
        wait_for_workers_gone()
        committed = {key_of_record(r) for r in load_records(output)}
        resumed_at = time.monotonic()
        second = run_generate(argv, ray_address=address, timeout_s=300)
        events = teacher.events()
    assert first.killed and second.returncode == 0, second.stderr[-3000:]
    rows = load_records(output)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == count  # nothing lost, nothing written twice
    assert all(r["finish_reason"] in ("stop", "length") and r["response"].startswith("<think>") for r in rows)
    t = tally(events)
    assert t["rate_limited"] > 0 and t["retry_after_early"] == 0, t
    resent = resent_after_resume(*split_at(events, resumed_at), committed)
    assert resent["committed"] > 0 and resent["committed_resent"] == 0, resent
