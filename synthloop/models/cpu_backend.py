"""Work-arounds for defects of the CPU kernels torch dispatches to.

oneDNN 3.12 (bundled with torch 2.14.1) corrupts the heap in the AVX2 JIT kernel for the weight
gradient of a **1x1 convolution with stride > 1 whose input is channels-last**
(``jit_1x1:avx2 backward_weights``, source layout ``acdb``). oneDNN picks that kernel on CPUs
without AVX-512 (e.g. AMD EPYC family 25 model 1) or where ``ONEDNN_MAX_CPU_ISA=AVX2`` caps the
ISA; the process then hangs, aborts (``double free or corruption``) or dies with a bus error,
often only at a later, unrelated free. Channels-last inputs arise without anyone asking: a
``(N, 1, H, W)`` image batch is both contiguous and channels-last, and a
``from_numpy(hwc).permute(0, 3, 1, 2).float()`` batch is channels-last. Minimal repro (aborts
or hangs in 50 passes on such a CPU; fine with AVX-512 kernels, with a contiguous input, with
stride 1, with a 3x3 kernel, or with a frozen weight)::

    ONEDNN_MAX_CPU_ISA=AVX2 python -c "
    import torch; conv = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False)
    for _ in range(50):
        x = torch.rand(4, 4, 28, 28).contiguous(memory_format=torch.channels_last)
        conv(x.requires_grad_()).sum().backward()"

The work-around is as narrow as the trigger: :func:`guard_strided_1x1_convs` gives each such
convolution a forward pre-hook that makes a CPU input contiguous (NCHW), so oneDNN runs its
plain-layout kernel for that one op (a copy of one activation; every other op keeps its
layout). Every training path of synthloop calls it on the model it trains. It can go once the
pinned torch bundles a oneDNN whose AVX2 1x1 backward-weights kernel passes the repro above
(re-check on each torch upgrade with ``tests/models/test_cpu_backend.py``, which runs the repro
with ``ONEDNN_MAX_CPU_ISA=AVX2`` in a subprocess).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["guard_strided_1x1_convs", "is_guarded"]

_FLAG = "_synthloop_nchw_guard"


def _nchw_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous():
        return (x.contiguous(),) + tuple(args[1:])
    return None


def _affected(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1


def guard_strided_1x1_convs(model: nn.Module) -> int:
    """Protect ``model``'s strided 1x1 convolutions from the oneDNN AVX2 defect (module docstring).

    Idempotent; returns the number of convolutions guarded by this call. The result of the model
    is unchanged (the hook only changes the memory layout of one input).
    """
    n = 0
    for m in model.modules():
        if _affected(m) and not getattr(m, _FLAG, False):
            m.register_forward_pre_hook(_nchw_input)
            setattr(m, _FLAG, True)
            n += 1
    return n


def is_guarded(model: nn.Module) -> bool:
    """Whether every strided 1x1 convolution of ``model`` is guarded."""
    return all(getattr(m, _FLAG, False) for m in model.modules() if _affected(m))
