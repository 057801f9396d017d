"""Linear layers through oneDNN with pre-packed weights, for inference on the CPU.

Decoding multiplies a handful of rows (one token, a 16-node tree, a drafter frontier) by large
weight matrices. On this CPU, `F.linear` runs those products far below what the hardware does:
one row of Gemma-3-270M's 262k x 640 head takes 39 ms (17 GB/s), sixteen rows 75 ms. oneDNN,
given the weight once re-laid out in its blocked format, takes 14 ms for 1 row (~50 GB/s, the
memory's speed), 18 ms for 16 and 62 for 64; the body's linear layers run 2-3x faster, and a 600-token
prefill 2x (`benchmarks/cost_curve.py`). It is the kernel PyTorch's own compiler emits for a
frozen linear layer on the CPU; here it is called directly, so the model's code is unchanged.

A row's result does not depend on which other rows share the call (a test checks it), so a
tree node's features are bit for bit those of the same token decoded alone in the linear layers.

`linear` is the function. The packed copy of a weight is made on first use and kept while the
weight lives and is not modified (a training step or a load makes a new one); the copies double
the memory the weights take. `speed_up_linears`
turns a module's `nn.Linear` layers into `FastLinear`, the same layer computing through `linear`
(same weights, same state dict). Anything else falls back to `F.linear` unchanged: other devices,
dtypes other than fp32, and any call autograd records.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

PACK_ROWS = 64  # the row count oneDNN lays the weight out for. With 16, the 262k-row head took
# 2x longer for 32-64 rows (73 vs 34 ms for 32) and ~3 ms less for 8; the body did not care.


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and callable(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()
_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> (data_ptr, version, packed weight)


def packed(weight: Tensor) -> Tensor:
    """oneDNN's blocked copy of `weight` [out, in], made once per weight and version."""
    entry = _packed.get(weight)
    if entry is None or entry[:2] != (weight.data_ptr(), weight._version):
        entry = (weight.data_ptr(), weight._version,
                 torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS))
        _packed[weight] = entry
    return entry[2]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [..., in] -> [..., out], as F.linear(x, weight, bias)."""
    if not (ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.numel()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                  or (bias is not None and bias.requires_grad)))):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    bias = None if bias is None else bias.detach()
    out = torch.ops.mkldnn._linear_pointwise(rows, packed(weight), bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


class FastLinear(nn.Linear):
    """An nn.Linear that computes through `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def speed_up_linears(module: nn.Module) -> nn.Module:
    """Turn every nn.Linear inside `module` into a FastLinear, in place; returns `module`."""
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = FastLinear
    return module
