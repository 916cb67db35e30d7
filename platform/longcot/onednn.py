"""bf16 linear layers laid out once for oneDNN, for forward passes on a CPU that computes bf16 natively.

``nn.Linear`` hands oneDNN a plain row-major weight on every call, and oneDNN reorders it into its blocked
layout each time. Reordered once at load (``pack_linear_layers``), a linear layer of SmolLM2-135M runs in about
half the time at 16 rows on one core, and decoding a batch of 16 is 1.24x faster on one thread and 1.13x on two
(bench/RESULTS.md). The greedy tokens and the held-out NLL are the same. This is what torch's inductor does when
it freezes a bf16 model for CPU (the same two ``mkldnn`` operators), without compiling anything.

A packed model runs forward passes only: its packed layers hold no ``nn.Parameter``, so it neither trains
nor saves. ``models.load_causal_lm(..., packed=True)`` is how the generate engine and eval's held-out scoring
load one.
"""

from __future__ import annotations

import torch

# the rows per forward pass oneDNN lays a weight out for: barely matters here (1, 16 or 1,024 rows all ran
# within 10% of each other at 1, 16 and 1,000 rows)
ROWS_HINT = 16


def can_pack(model) -> bool:
    """Whether ``model``'s weights are bf16 on a CPU whose oneDNN computes bf16 natively."""
    param = next(model.parameters(), None)
    return (param is not None and param.device.type == "cpu" and param.dtype == torch.bfloat16
            and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(torch.nn.Module):
    """A bf16 ``nn.Linear`` whose weight oneDNN reordered once; the same products, in about half the time."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), ROWS_HINT)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one contiguous 2-D product: the generate step's strided last positions included
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linear_layers(model) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a ``PackedLinear`` where ``can_pack``; returns how many.

    A layer's own weight is freed with it. A weight it shares (an output head tied to the input embeddings)
    stays where it is shared, so a tied head costs its packed copy in memory.
    """
    if not can_pack(model):
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, PackedLinear(child))
                count += 1
    return count
