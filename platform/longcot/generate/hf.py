"""Batched generation with transformers, on CPU or GPU: the ``hf`` backend's engine.

``HFGenerator`` loads a causal LM once (``embedded:NAME``, a hub id or a local path, optionally with a
PEFT adapter) and generates for many rendered prompts at a time with left padding. Sampling is done per
row with the row's own ``torch.Generator`` (``RowSampler``), so a sample depends on its prompt and seed
only, not on which other prompts shared its batch: a resumed run regenerates exactly what an
uninterrupted one would have (up to floating-point noise between batch shapes).
"""

from __future__ import annotations

import functools
import inspect
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Iterator

from longcot.generate.backend import Completion, Engine, Sampling, decoded, too_long

SEED_MODULUS = 2**63 - 1


class RowSampler:
    """A logits processor that samples each row with its own generator (temperature > 0, then top-p).

    It leaves only the sampled token with a finite score, so greedy selection after it picks that token.
    Greedy decoding (``temperature == 0``) goes without it.
    """

    def __init__(self, temperature: float, top_p: float, seeds: list[int | None], device: str):
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
        self.generators = []
        for seed in seeds:
            gen = torch.Generator(device=device)
            if seed is None:
                gen.seed()
            else:
                gen.manual_seed(int(seed) % SEED_MODULUS)
            self.generators.append(gen)

    def __call__(self, input_ids, scores):
        import torch

        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.stack(
            [torch.multinomial(probs[i], 1, generator=self.generators[i]) for i in range(probs.shape[0])]
        ).view(-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out


def in_place_cache(model, capacity: int):
    """A ``DynamicCache`` for ``model`` whose full-attention layers write each step's keys and values into a
    buffer instead of concatenating them to the cache: the default cache copies all of itself at every decoding
    step (bench/RESULTS.md). A buffer holds up to ``capacity`` positions (prompt width + new tokens), or twice
    what is cached when that is less, so a long ``max_tokens`` reserves memory only as the answers grow; a full
    buffer is replaced by one twice as long. Other layer kinds (sliding windows) stay as the config makes them."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class InPlaceLayer(DynamicLayer):
        buffers = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.get_seq_length()
            end = n + key_states.shape[-2]
            # a new buffer when the first one is full or the keys were replaced (``crop``, batch selection)
            fresh = self.buffers is None or self.keys.data_ptr() != self.buffers[0].data_ptr()
            if fresh or end > self.buffers[0].shape[-2]:
                size = min(capacity, 2 * end) if end <= capacity else 2 * end
                shape = (*key_states.shape[:-2], size, key_states.shape[-1])
                self.buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
                if n:
                    self.buffers[0][..., :n, :], self.buffers[1][..., :n, :] = self.keys, self.values
            self.buffers[0][..., n:end, :], self.buffers[1][..., n:end, :] = key_states, value_states
            self.keys, self.values = self.buffers[0][..., :end, :], self.buffers[1][..., :end, :]
            return self.keys, self.values

    cache = DynamicCache(config=model.config)
    cache.layers = [InPlaceLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class TorchThread:
    """One daemon thread that runs the calls submitted to it in turn (``submit`` returns a ``Future``). Unlike a
    ``ThreadPoolExecutor``'s, it does not hold up the interpreter's exit: an interrupted process leaves at once
    instead of finishing the batch being generated."""

    def __init__(self):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="longcot-torch", daemon=True).start()

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)


@functools.cache
def torch_thread() -> TorchThread:
    """The one thread on which this process's engines run their torch work (model loads, adapter merges and
    generation), whichever thread calls them. OpenMP keeps a team of worker threads for each thread that calls
    into torch, and once a process has more of them than cores, libgomp stops spinning between operations, so
    every operation waits for threads to wake. The eval's student, merged on a Ray Data actor's main thread and
    then generating on its batch thread, took 1.4x as long as on one thread (bench/RESULTS.md). Other torch work
    in the same process (a bench's reference model) is best run here too."""
    return TorchThread()


os.register_at_fork(after_in_child=torch_thread.cache_clear)  # a forked child has no such thread: it makes its own


def on_torch_thread(fn: Callable, *args, **kwargs) -> Future:
    """``fn(*args, **kwargs)`` in inference mode on ``torch_thread``, after the calls queued there."""

    def call():
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return torch_thread().submit(call)


def cache_keyword(model) -> str:
    """The name of ``model.generate``'s cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class HFGenerator(Engine):
    """A transformers causal LM that generates for batches of already-rendered prompts.

    ``generate`` returns one ``Completion`` per prompt, in order; ``stream`` yields the text of one
    prompt as it is produced. Calls are serialised on the process's ``torch_thread`` (one forward pass at a time).
    """

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        threads: int | None = None,
        packed: bool = True,
    ):
        """``threads``: torch CPU threads for this process (None keeps torch's default; on a shared
        machine 1 is often much faster than oversubscribing). ``packed``: bf16 weights on a CPU laid out once for
        oneDNN (``models.load_causal_lm``); False only to measure what that changes."""
        from longcot.models import load_tokenizer

        self.batch_size = max(1, int(batch_size))
        self.tokenizer = load_tokenizer(model, padding_side="left")
        # outside inference mode (unlike generation), so the weights stay ordinary tensors for any caller
        torch_thread().submit(self._load, model, adapter, device, dtype, threads, packed).result()
        config = getattr(self.model, "config", None)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 0) or None
        self._cache_arg = cache_keyword(self.model)

    def _load(self, model: str, adapter: str | None, device: str, dtype: str, threads: int | None,
              packed: bool) -> None:
        import torch

        from longcot.models import load_causal_lm, stop_token_ids

        if threads:
            torch.set_num_threads(int(threads))
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = load_causal_lm(model, adapter=adapter, dtype=dtype, device=self.device, packed=packed)
        self.stop_ids = stop_token_ids(model, self.tokenizer, getattr(self.model, "generation_config", None))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate_kwargs(self, width: int, sampling: Sampling, seeds: list[int | None]) -> dict:
        """``model.generate``'s arguments for prompts padded to ``width`` tokens: at most ``max_tokens`` new ones,
        fewer where the model's context ends first (at least one)."""
        from transformers import LogitsProcessorList

        max_tokens = sampling.max_tokens
        if self.context_length:
            max_tokens = max(1, min(max_tokens, self.context_length - width))
        processors = LogitsProcessorList()
        if sampling.temperature > 0:  # greedy decoding needs no sampler
            processors.append(RowSampler(sampling.temperature, sampling.top_p, seeds, self.device))
        return {
            self._cache_arg: in_place_cache(self.model, width + max_tokens),
            "max_new_tokens": max_tokens,
            "do_sample": False,  # RowSampler does the sampling, per row
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "logits_processor": processors,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.stop_ids,
        }

    def _encode(self, prompts: list[str]):
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def complete(self, prompts: list[str], sampling: Sampling, seeds: list[int | None]) -> list[Completion]:
        """Generate for every prompt, ``batch_size`` at a time (prompts of similar length together).

        A prompt that does not fit the model's context, or a batch that fails, yields ``finish_reason
        "error"`` rows rather than an exception.
        """
        lengths = [self.count_tokens(p) for p in prompts]
        results = [too_long(n, self.context_length) for n in lengths]
        order = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: lengths[i])
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            try:
                outs = self._generate_batch([prompts[i] for i in chunk], sampling, [seeds[i] for i in chunk])
            except Exception as exc:  # e.g. out of memory: the rows fail, the caller goes on
                outs = [Completion.failed(f"{type(exc).__name__}: {exc}", prompt_tokens=lengths[i]) for i in chunk]
            for i, completion in zip(chunk, outs):
                results[i] = completion
        return [r for r in results if r is not None]

    def _generate_batch(
        self, prompts: list[str], sampling: Sampling, seeds: list[int | None]
    ) -> list[Completion]:
        started = time.perf_counter()
        enc = self._encode(prompts)
        width = enc["input_ids"].shape[1]
        out = on_torch_thread(self.model.generate, **enc, **self._generate_kwargs(width, sampling, seeds)).result()
        seconds = time.perf_counter() - started
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [decoded(self.tokenizer, tokens, self.stop_ids, int(n_prompt), seconds)
                for tokens, n_prompt in zip(out[:, width:].tolist(), prompt_lengths)]

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_finish: Callable[[Completion], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the text of one completion in pieces as it is generated.

        ``on_finish`` (optional) receives the final ``Completion`` (token counts, finish reason). Setting
        ``cancel`` (a client that went away) stops the generation at its next token.
        """
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        started = time.perf_counter()
        enc = self._encode([prompt])
        width = enc["input_ids"].shape[1]
        on_finish = on_finish or (lambda completion: None)
        refused = too_long(width, self.context_length)
        if refused:
            on_finish(refused)
            raise ValueError(refused.error)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict = {}

        cancel = cancel or threading.Event()
        # every row stops once ``cancel`` is set
        stopping = StoppingCriteriaList([lambda input_ids, scores, **kwargs: torch.full(
            (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)])

        def work() -> None:
            try:
                result["out"] = self.model.generate(
                    **enc, streamer=streamer, stopping_criteria=stopping,
                    **self._generate_kwargs(width, Sampling(max_tokens, temperature, top_p), [seed])
                )
            except Exception as exc:
                result["error"] = exc
                streamer.end()

        running = on_torch_thread(work)  # after any generation already on the torch thread
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:  # the consumer stopped reading (closed, or gone): stop generating too
            if not running.done():
                cancel.set()
            running.result()
        if "error" in result:
            on_finish(Completion.failed(f"{type(result['error']).__name__}: {result['error']}", prompt_tokens=width))
            raise result["error"]
        on_finish(decoded(self.tokenizer, result["out"][0, width:].tolist(), self.stop_ids, width,
                          time.perf_counter() - started))

