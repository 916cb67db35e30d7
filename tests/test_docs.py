"""The README's promises: the two commands exist as written, CI runs the test one word for word, and
the configuration reference is generated from the code, so it never drifts."""

from __future__ import annotations

import re
from pathlib import Path

from longcot.configdoc import markdown_reference

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    quickstart, tests = commands
    assert "quickstart" in quickstart
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), f"{tests!r} must appear as a line of .ci/run"
    makefile = (REPO / "Makefile").read_text()
    for command in commands:
        target = command.split()[-1]
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"


def test_configuration_reference_is_up_to_date():
    doc = (REPO / "docs" / "configuration.md").read_text()
    generated = markdown_reference()
    assert generated in doc, "docs/configuration.md is stale: run `longcot config-schema --markdown`"
