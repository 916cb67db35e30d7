"""The code sandbox: ordinary programs work; hostile ones are contained with the right status and the
host is unaffected (no process left behind, no file touched, no connection made, no secret read)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from longcot.verify.code import check_code, same_output
from longcot.verify.config import SandboxConfig
from longcot.verify.sandbox import Sandbox, containment


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=4, memory_mb=512, max_output_kb=256, max_file_mb=8))


def _processes_of(uid: int | None) -> list[int]:
    if uid is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            line = next((l for l in status.splitlines() if l.startswith("Uid:")), "")
            if str(uid) in line.split():
                found.append(int(entry.name))
    return found


def _run(sandbox, source, stdin=""):
    result = sandbox.run_python(source, stdin=stdin)
    assert result.status != "error", result.detail  # the sandbox itself always works
    assert _processes_of(result.uid) == []  # nothing of the run survives it
    return result


def test_strongest_containment_is_in_use_here():
    # CI and this machine run as root, where RLIMIT_NPROC alone would not hold: namespaces plus own uid
    assert containment() == ("namespaces" if os.geteuid() == 0 else "user-namespaces")


def test_a_program_reads_stdin_writes_stdout_and_its_own_files(sandbox):
    result = _run(sandbox, "open('notes.txt','w').write(input()*2)\nprint(open('notes.txt').read())", "ab\n")
    assert result.status == "ok" and result.stdout == "abab\n"
    assert result.uid is None or result.uid >= 1_000_000


def test_a_failing_program_is_failed_with_its_error(sandbox):
    result = _run(sandbox, "raise ValueError('nope')")
    assert result.status == "failed" and result.detail == "ValueError: nope"


def test_infinite_loop_times_out_within_the_limit(sandbox):
    started = time.monotonic()
    result = _run(sandbox, "while True:\n    pass")
    assert result.status == "timeout"
    assert time.monotonic() - started < sandbox.config.timeout_s + 3


def test_fork_bomb_is_capped_and_every_child_is_killed(sandbox):
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
    )
    result = _run(sandbox, bomb)
    assert result.status in ("failed", "timeout")
    assert "Resource temporarily unavailable" in result.stderr or result.status == "timeout"
    assert os.fork  # the host can still fork
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


def test_allocating_20_gb_fails_with_memory_error(sandbox):
    result = _run(sandbox, "block = bytearray(20 * 1024**3)")
    assert result.status == "failed" and result.detail == "MemoryError"


def test_deep_recursion_is_contained(sandbox):
    plain = _run(sandbox, "def f(n):\n    return f(n + 1)\nf(0)")
    assert plain.status == "failed" and "RecursionError" in plain.detail
    unbounded = _run(sandbox, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)")
    assert unbounded.status in ("failed", "timeout")  # a crash or the limit, never the host


def test_writing_a_10_gb_file_stops_at_the_file_size_limit(sandbox):
    result = _run(sandbox, "chunk = b'0' * (1 << 20)\nwith open('big', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(chunk)")
    assert result.status == "failed" and "File too large" in result.detail


def test_files_outside_its_directory_cannot_be_deleted_or_written(sandbox, artifacts_dir):
    victims = artifacts_dir / "sandbox-victims"
    victims.mkdir(exist_ok=True)
    victims.chmod(0o777)  # world-writable: only the read-only mounts protect it
    victim = victims / "keep.txt"
    victim.write_text("precious")
    victim.chmod(0o666)
    program = (
        "import os, shutil\n"
        f"errors = []\n"
        f"for attempt in (lambda: os.remove({str(victim)!r}), lambda: shutil.rmtree({str(victims)!r}),\n"
        f"                lambda: open({str(victim)!r}, 'w').write('gone'), lambda: open('/var/tmp/x', 'w'),\n"
        f"                lambda: os.remove({str(Path(__file__).resolve())!r})):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as exc:\n"
        "        errors.append(exc.errno)\n"
        "print(errors)\n"
        "assert len(errors) == 5\n"
    )
    result = _run(sandbox, program)
    assert result.status == "ok", result.stderr
    assert victim.read_text() == "precious"
    assert not Path("/var/tmp/x").exists()
    assert Path(__file__).exists()


def test_network_connections_fail_and_reach_nothing(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    watcher = threading.Thread(target=accept)
    watcher.start()
    program = (
        "import socket\n"
        "for address in [('127.0.0.1', %d), ('1.1.1.1', 53)]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=2)\n"
        "        print('connected', address)\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.errno)\n"
    ) % port
    result = _run(sandbox, program)
    done.set()
    watcher.join()
    server.close()
    assert result.status == "ok" and "connected" not in result.stdout
    assert accepted == []


def test_the_parents_environment_secrets_are_unreadable(sandbox, monkeypatch):
    monkeypatch.setenv("LONGCOT_TEST_SECRET", "s3cr3t-value")
    program = (
        "import os\n"
        "print(sorted(os.environ.items()))\n"
        f"for pid in ['1', str(os.getppid()), {str(os.getpid())!r}, 'self']:\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print('denied', pid, exc.errno)\n"
    )
    result = _run(sandbox, program)
    assert result.status == "ok"
    assert "s3cr3t-value" not in result.stdout + result.stderr
    assert "LONGCOT_TEST_SECRET" not in result.stdout


def test_killing_the_parent_is_impossible(sandbox):
    program = (
        "import os, signal\n"
        f"for pid in [os.getppid(), {os.getpid()}, 1]:\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print('killed', pid)\n"
        "    except OSError as exc:\n"
        "        print('refused', pid, exc.errno)\n"
    )
    result = _run(sandbox, program)
    assert result.status == "ok" and "killed" not in result.stdout


def test_printing_1_gb_stops_at_the_output_cap(sandbox):
    started = time.monotonic()
    result = _run(sandbox, "import sys\nline = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(line)")
    assert result.status == "output_limit"
    assert len(result.stdout) == sandbox.config.max_output_kb << 10
    assert time.monotonic() - started < sandbox.config.timeout_s + 3


def test_stdio_tests_compare_outputs_token_by_token(sandbox):
    tests = {"kind": "stdio", "cases": [{"input": "2 3\n", "output": "5\n"}, {"input": "1.5 1\n", "output": "2.5"}]}
    good = "a, b = map(float, input().split())\nr = a + b\nprint(int(r) if r.is_integer() else r)"
    assert check_code(good, tests, sandbox).verdict == "correct"
    wrong = check_code("print(5)", tests, sandbox)
    assert wrong.verdict == "incorrect" and wrong.detail.startswith("case 2")
    quick = Sandbox(SandboxConfig(timeout_s=1))
    slow = check_code("while True: pass", {"kind": "stdio", "inputs": ["1"], "outputs": ["1"]}, quick)
    assert slow.verdict == "timeout"
    assert same_output("1.0000001 x", "1.0 x") and not same_output("1 2", "1 2 3")


def test_the_rlimits_fallback_still_refuses_sockets_and_times_out():
    # where namespaces are not allowed: rlimits, a temporary directory, an audit hook against sockets
    weak = Sandbox(SandboxConfig(timeout_s=2))
    weak.mode = "rlimits"
    net = weak.run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert net.status == "failed" and "network access is disabled" in net.detail
    assert weak.run_python("print(input())", stdin="hi").stdout == "hi\n"
    assert weak.run_python("while True: pass").status == "timeout"
