"""Prompts for teacher rollouts: a reasoning system prompt, a per-domain instruction, the chat template.

- The system prompt asks for a thought section, then a solution section, each between explicit markers.
  The marker convention is ``sky`` (``<|begin_of_thought|>`` ... ``<|end_of_solution|>``, as in Sky-T1)
  or ``think`` (``<think>`` ... ``</think>`` then the answer, as in R1); ``longcot.traces`` reads both.
- The user turn is the problem, then an instruction. Its source, first match wins: the ``instruction``
  argument (the stage config's override; ``""`` for none), the row's own (``metadata.instruction``, or the
  registry entry of the benchmark the row came from), the default of the row's domain.
- ``StudentPrompt`` is how a student is prompted: the same messages in training, evaluation and serving
  (its card carries it, see ``train.card``), built by the same ``build_messages``.
- ``render_prompt`` applies the tokenizer's chat template; a template without a system role gets the
  system text at the top of the user turn, and a tokenizer without any template a plain layout.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json

from pydantic import BaseModel, Field

from longcot.traces import SKY_MARKERS, THINK_MARKERS

DOMAIN_INSTRUCTIONS: dict[str, str] = {
    "math": "Give the final answer in \\boxed{} at the end of the solution.",
    "code": "Give the solution as a single fenced Python code block containing the complete program.",
    "mcq": "Choose one option and give its letter in \\boxed{}, for example \\boxed{B}.",
    "gym": "Give the final answer in \\boxed{} at the end of the solution.",
}

_SYSTEM_HEAD = (
    "You are a meticulous problem solver. Work in two parts.\n\n"
    "First, reason before you commit to an answer: restate what is asked, try one or more approaches, "
    "check each intermediate result, and when something does not add up, say so and fix it. "
    "Long, careful reasoning is welcome here; leave nothing implicit."
)

_SYSTEM_BY_MARKERS = {
    "sky": (
        "\n\nWrite this reasoning between {0} and {1}.\n\n"
        "Second, write the final solution between {2} and {3}: a clean, self-contained account of the "
        "steps that work, ending with the answer in the requested form.\n\n"
        "So your reply has exactly this shape:\n{0}\nreasoning\n{1}\n{2}\nsolution\n{3}"
    ).format(*SKY_MARKERS),
    "think": (
        "\n\nWrite this reasoning between {0} and {1}.\n\n"
        "Second, after {1}, write the final solution: a clean, self-contained account of the steps that "
        "work, ending with the answer in the requested form.\n\n"
        "So your reply has exactly this shape:\n{0}\nreasoning\n{1}\nsolution"
    ).format(*THINK_MARKERS),
}


def system_prompt(markers: str) -> str:
    """The reasoning system prompt for a marker convention (``sky`` or ``think``)."""
    if markers not in _SYSTEM_BY_MARKERS:
        raise ValueError(f"unknown marker convention {markers!r}; allowed: {', '.join(_SYSTEM_BY_MARKERS)}")
    return _SYSTEM_HEAD + _SYSTEM_BY_MARKERS[markers]


def with_thought(thought: str, answer: str, markers: str = "think") -> str:
    """A response as ``markers`` lay it out, from a thought and an answer that came apart (a reasoning API's
    ``reasoning_content``, a dataset's reasoning column)."""
    if markers == "sky":
        b_t, e_t, b_s, e_s = SKY_MARKERS
        return f"{b_t}\n{thought.strip()}\n{e_t}\n\n{b_s}\n{answer.strip()}\n{e_s}"
    return f"{THINK_MARKERS[0]}\n{thought.strip()}\n{THINK_MARKERS[1]}\n\n{answer.strip()}"


@functools.lru_cache(maxsize=1)
def _registry_instructions() -> dict[str, str]:
    from longcot.problems.benchmarks import load_registry

    return {name: spec.instruction for name, spec in load_registry().items()}


def instruction_for(row: dict, instruction: str | None = None) -> str:
    """The instruction shown after the problem (see the module doc for the order); ``""`` means none. The row's
    own is its ``metadata.instruction`` (``""`` too for imported traces, whose problem is the whole user turn),
    else its benchmark's registry instruction."""
    if instruction is not None:
        return instruction
    meta = row.get("metadata")
    if isinstance(meta, str):
        with contextlib.suppress(json.JSONDecodeError):  # not JSON: no instruction of its own
            meta = json.loads(meta)
    meta = meta if isinstance(meta, dict) else {}
    if isinstance(meta.get("instruction"), str):
        return meta["instruction"]
    source = row.get("source") or ""
    name = (source.split(":", 1)[1] if source.startswith("benchmark:") else None) or meta.get("benchmark")
    own = _registry_instructions().get(name) if isinstance(name, str) and name else None
    return own if own is not None else DOMAIN_INSTRUCTIONS.get(row.get("domain") or "math", DOMAIN_INSTRUCTIONS["math"])


def build_messages(row: dict, *, markers: str = "think", instruction: str | None = None,
                   system: str | None = None) -> list[dict]:
    """Chat messages for a problem record: the reasoning system prompt, then the problem and instruction.

    ``system`` replaces the built-in system prompt (an empty string drops the system turn, leaving the chat
    template's default).
    """
    problem = (row.get("problem") or "").strip()
    if not problem:
        raise ValueError("the record has no problem text")
    sys_text = system_prompt(markers) if system is None else system
    said = instruction_for(row, instruction)
    user = f"{problem}\n\n{said}" if said else problem
    messages = [{"role": "system", "content": sys_text}] if sys_text else []
    return messages + [{"role": "user", "content": user}]


class StudentPrompt(BaseModel):
    """How a student is prompted, identically when it trains, is evaluated and is served: its tokenizer's chat
    template around an optional system turn and the user turn (the problem, then the instruction)."""

    system_prompt: str | None = Field(None, description="System turn; null: none (the chat template's default).")
    instruction: str | None = Field(
        None, description="Text after the problem; null: the row's own, else its domain's default; '' for none."
    )

    def messages(self, row: dict) -> list[dict]:
        """The chat messages of a problem record, without the answer (``ValueError`` without problem text)."""
        return build_messages(row, instruction=self.instruction, system=self.system_prompt or "")

    def generate_settings(self) -> dict[str, str | None]:
        """The generate stage's ``system_prompt`` and ``instruction`` that render these same messages."""
        return {"system_prompt": self.system_prompt or "", "instruction": self.instruction}


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt string for ``messages`` with the tokenizer's chat template and the assistant turn opened."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # templates that reject a system turn raise their own error types
            if messages and messages[0]["role"] == "system" and "system" in str(exc).lower():
                return tokenizer.apply_chat_template(
                    _fold_system(messages), tokenize=False, add_generation_prompt=True
                )
            raise
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


def _fold_system(messages: list[dict]) -> list[dict]:
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    if rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def prompt_version(markers: str, instruction: str | None = None, system: str | None = None) -> str:
    """A hash of the prompt text the stage uses (part of the output's fingerprint)."""
    blob = json.dumps(
        [system_prompt(markers) if system is None else system, instruction, DOMAIN_INSTRUCTIONS,
         _registry_instructions()],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
