"""Generation with llama.cpp on a GGUF file, on CPU: the ``llamacpp`` backend's engine.

``LlamaCppGenerator`` decodes several sequences together through llama.cpp's batch API (one context with
``sequences`` slots sharing one KV cache, each attending to its own cells only): every step feeds the next
token of every running sequence in one ``llama_decode``, and a slot that finishes takes the next prompt at
once. On a CPU this reads the weights once per step for all of them, where llama-cpp-python's high-level
``Llama`` reads them once per token of one sequence (``bench/bench_generate.py`` measures both).

llama.cpp only computes logits here. Prompts are tokenized, outputs decoded and counted with the model's
Hugging Face tokenizer (the student's, as everywhere in longcot), and tokens are chosen in this module with a
per-sample seeded generator, so the records match the hf backend's field for field: same prompt tokens, same
stop tokens, same ``finish_reason`` rules, and greedy decoding picks the argmax as transformers does. As in
the hf backend, a sample depends on its prompt and seed, up to floating-point noise between batch shapes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from longcot.errors import ConfigError
from longcot.generate.backend import Completion, Engine, Sampling, decoded, too_long

INSTALL_HINT = ("the llamacpp backend needs llama-cpp-python, which compiles llama.cpp when installed (minutes): "
                "pip install 'longcot[llamacpp]'")
CONTEXT_STEP = 256  # per-sequence context is sized to the work, rounded up to this, so a context is rarely rebuilt
WEIGHT_TYPES = {"bf16": "LLAMA_FTYPE_MOSTLY_BF16", "f16": "LLAMA_FTYPE_MOSTLY_F16",
                "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}


def import_llama_cpp():
    """The ``llama_cpp`` module, or ``ConfigError`` with the one line that says how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return llama_cpp


def stored_as(gguf: str, weights: str) -> str:
    """The GGUF file to run for ``gguf`` with its weights stored as ``weights`` ("as_stored": ``gguf`` itself).

    llama.cpp's own quantizer writes the copy once into longcot's cache, named by the source's sha256, and
    every later call (another actor, another run) reuses it. Actors that start together take a file lock, so
    one converts while the others wait for its copy, which is written beside its final name and moved into
    place whole (as ``models.resolve`` materialises an embedded model). From a quantised source, "bf16"
    stores the very values the hf backend computes with in bf16 (each weight dequantised, then rounded once).
    """
    if weights == "as_stored":
        return gguf
    from longcot.models import cache_dir
    from longcot.rundir import hash_path

    target = cache_dir() / "gguf" / f"{hash_path(gguf)[:16]}-{Path(gguf).stem}.{weights}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):
        if target.is_file():
            return str(target)
        llama_cpp = import_llama_cpp()
        _quiet(llama_cpp)
        partial = target.with_name(f".{target.name}.partial")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, WEIGHT_TYPES[weights])
        params.allow_requantize = True  # a quantised source is dequantised first, as the hf backend loads it
        params.nthread = os.cpu_count() or 1
        try:
            if llama_cpp.llama_model_quantize(str(gguf).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
                raise ConfigError(f"generate.llamacpp.weights: llama.cpp could not store {gguf} as {weights}")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return str(target)


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator | None) -> int:
    """The next token from one row of logits: the argmax when ``temperature`` is 0, else a draw from the
    softmax at ``temperature`` restricted to the smallest set of tokens holding ``top_p`` of the mass."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        mass = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(mass, top_p)) + 1]  # the token that crosses top_p stays in
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    rng = rng or np.random.default_rng()
    return int(rng.choice(probs.shape[0], p=probs))


class _Slot:
    """One sequence being decoded: its prompt's index, position, tokens so far and sampler."""

    def __init__(self, index: int, seq: int, n_prompt: int, limit: int, rng: np.random.Generator | None):
        self.index, self.seq, self.n_prompt, self.limit, self.rng = index, seq, n_prompt, limit, rng
        self.tokens: list[int] = []
        self.started = time.perf_counter()


class LlamaCppGenerator(Engine):
    """A GGUF model in llama.cpp that generates for batches of already-rendered prompts (an ``Engine``).

    ``model``: the Hugging Face reference whose tokenizer encodes prompts and decodes and counts outputs;
    ``gguf``: the weights llama.cpp runs, stored as ``weights`` (``stored_as``). ``sequences`` prompts are
    decoded together; ``threads`` is llama.cpp's CPU threads (None: all of this machine's). A prompt that
    leaves no room in the model's context yields an ``error`` completion, not an exception. Calls are
    serialised (one context).
    """

    def __init__(self, model: str, *, gguf: str, weights: str = "as_stored", sequences: int = 16,
                 threads: int | None = None):
        from longcot.models import load_tokenizer, stop_token_ids

        self.llama_cpp = llama_cpp = import_llama_cpp()
        if not Path(gguf).is_file():
            raise ConfigError(f"generate.llamacpp.gguf: no such GGUF file: {gguf}")
        gguf = stored_as(gguf, weights)
        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.stop_ids = set(stop_token_ids(model, self.tokenizer))
        self.sequences = max(1, int(sequences))
        self.threads = int(threads or os.cpu_count() or 1)
        llama_cpp.llama_backend_init()
        _quiet(llama_cpp)
        params = llama_cpp.llama_model_default_params()
        # with AMX, llama.cpp repacks 4- and 8-bit weights whose matrix product then segfaults (llama.cpp #20824)
        params.use_extra_bufts = b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info()
        self.model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise ConfigError(f"generate.llamacpp.gguf: llama.cpp could not load {gguf}")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.context_length = int(llama_cpp.llama_model_n_ctx_train(self.model)) or None
        self.ctx = None
        self.seq_context = 0
        self.batch = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the context, batch and model (also done when the generator is collected)."""
        llama_cpp = self.llama_cpp
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        # as the hf backend encodes a rendered prompt: the chat template already holds the special tokens
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _ensure_context(self, seq_context: int) -> None:
        """A context for ``sequences`` sequences of at least ``seq_context`` cells each (rebuilt only to grow)."""
        if self.ctx and seq_context <= self.seq_context:
            return
        llama_cpp = self.llama_cpp
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            llama_cpp.llama_batch_free(self.batch)
        seq_context = -(-seq_context // CONTEXT_STEP) * CONTEXT_STEP
        if self.context_length:
            seq_context = min(seq_context, self.context_length)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = seq_context * self.sequences
        params.n_seq_max = self.sequences
        # one KV buffer for all sequences (the mask keeps each to its own cells): with a buffer per sequence
        # llama.cpp splits every step into a micro-batch per sequence, half the decode speed (bench/RESULTS.md)
        params.kv_unified = True
        params.n_batch = params.n_ubatch = max(512, self.sequences)
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {params.n_ctx} tokens")
        self.n_batch = int(params.n_batch)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.seq_context = seq_context

    def complete(self, prompts: list[str], sampling: Sampling, seeds: list[int | None]) -> list[Completion]:
        """One ``Completion`` per prompt, in order (``Engine.generate``; see the class docstring)."""
        encoded = [self.encode(p) for p in prompts]
        results = [too_long(len(ids), self.context_length) if ids else
                   Completion.failed("the rendered prompt is empty", prompt_tokens=0) for ids in encoded]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            with self._lock:
                self._ensure_context(max(len(encoded[i]) for i in todo) + sampling.max_tokens)
                try:
                    self._decode_all(todo, encoded, results, sampling, seeds)
                except Exception as exc:  # the rows fail, the caller goes on (as the hf engine's batches do)
                    for i in todo:
                        if results[i] is None:
                            results[i] = Completion.failed(f"{type(exc).__name__}: {exc}", prompt_tokens=len(encoded[i]))
        return [r for r in results if r is not None]

    def _decode_all(self, todo, encoded, results, sampling: Sampling, seeds) -> None:
        """Decode the prompts ``todo`` through the context's slots until every one has its completion."""
        llama_cpp = self.llama_cpp
        temperature, top_p = sampling.temperature, sampling.top_p
        memory = llama_cpp.llama_get_memory(self.ctx)
        llama_cpp.llama_memory_clear(memory, True)
        waiting = list(reversed(todo))  # popped from the end: prompts start in the order given
        free = list(range(self.sequences))
        running: list[_Slot] = []
        while waiting or running:
            while waiting and free:  # fill every free slot: prefill its prompt, choose its first token
                i = waiting.pop()
                seq = free.pop()
                rng = None if temperature <= 0 else np.random.default_rng(seeds[i])
                limit = min(sampling.max_tokens, self.seq_context - len(encoded[i]))
                slot = _Slot(i, seq, len(encoded[i]), limit, rng)
                logits = self._prefill(encoded[i], seq)
                slot.tokens.append(sample_token(logits, temperature, top_p, slot.rng))
                running.append(slot)
            for slot in [s for s in running if self._finished(s)]:
                results[slot.index] = decoded(self.tokenizer, slot.tokens, self.stop_ids, slot.n_prompt,
                                              time.perf_counter() - slot.started)
                running.remove(slot)
                llama_cpp.llama_memory_seq_rm(memory, slot.seq, -1, -1)
                free.append(slot.seq)
            if not running:
                continue
            self._fill([(s.tokens[-1], s.n_prompt + len(s.tokens) - 1, s.seq, True) for s in running])
            self._decode()
            for k, slot in enumerate(running):
                slot.tokens.append(sample_token(self._logits(k), temperature, top_p, slot.rng))

    def _finished(self, slot: _Slot) -> bool:
        return slot.tokens[-1] in self.stop_ids or len(slot.tokens) >= slot.limit

    def _prefill(self, ids: list[int], seq: int) -> np.ndarray:
        """Feed a prompt into ``seq``'s stream, ``n_batch`` tokens per decode; the logits after its last token."""
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            last = start + len(chunk) == len(ids)
            self._fill([(t, start + k, seq, last and k == len(chunk) - 1) for k, t in enumerate(chunk)])
            self._decode()
        return self._logits(self.batch.n_tokens - 1)

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """The batch holds these ``(token, position, sequence, wants logits)`` entries."""
        batch = self.batch
        for k, (token, pos, seq, wants) in enumerate(entries):
            batch.token[k] = token
            batch.pos[k] = pos
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = seq
            batch.logits[k] = wants
        batch.n_tokens = len(entries)

    def _decode(self) -> None:
        code = self.llama_cpp.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def _logits(self, k: int) -> np.ndarray:
        """A copy of the logits of batch entry ``k`` (the buffer is overwritten by the next decode)."""
        ptr = self.llama_cpp.llama_get_logits_ith(self.ctx, k)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()


@functools.cache  # keeps the callback, which must outlive every call into llama.cpp, or it is collected under it
def _quiet(llama_cpp):
    """llama.cpp's own log lines (model metadata, every context built) off; its errors reach us as codes."""
    sink = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(sink, ctypes.c_void_p())
    return sink
