"""Shared helpers of the functional tests."""

import torch


def tol(dtype: torch.dtype) -> dict:
    """``assert_close`` tolerances for results that are exact up to rounding."""
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}


def rand(*shape: int, gen: torch.Generator, dtype=torch.float32, device="cpu", low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform values in [low, high), drawn on the CPU from ``gen`` (same numbers on every device)."""
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) * (high - low) + low
    return x.to(device=device, dtype=dtype)


def gradcheck(fn, inputs: tuple, **kwargs) -> bool:
    """``torch.autograd.gradcheck`` that tolerates cuDNN's non-deterministic convolution backward."""
    on_cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in inputs)
    kwargs.setdefault("nondet_tol", 1e-12 if on_cuda else 0.0)
    return torch.autograd.gradcheck(fn, inputs, **kwargs)
