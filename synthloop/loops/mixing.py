"""Minibatches with an exact real:synthetic mix (MrGAN §3.3; "balanced gradient contribution").

:class:`MixedBatchSampler` is a batch sampler for a ``torch.utils.data.DataLoader`` over
``ConcatDataset([real, synthetic])``: every batch it yields is a list of indices holding exactly
``real_per_batch`` real and ``synthetic_per_batch`` synthetic samples, real ones first::

    data = ConcatDataset([real, synthetic])
    sampler = MixedBatchSampler.from_datasets(real, synthetic, batch_size=64, ratio="1:7", seed=0)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=4)   # 8 real + 56 synthetic
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader: ...

Counts. ``ratio`` ``r:s`` splits a batch into ``batch_size * r / (r + s)`` real and the rest
synthetic; ``batch_size`` must be a multiple of ``r + s`` (otherwise an error names the nearest
valid sizes), so the counts are exact rather than rounded. ``max_synthetic_share`` caps the
synthetic share of each batch: the synthetic count becomes ``min(s_count, floor(cap * batch_size))``
and the real count takes the rest, so batches keep their size.

Epochs are defined by the real set: an epoch is one pass over the real indices in a fresh random
order, ``ceil(n_real / real_per_batch)`` batches (``floor`` with ``drop_last``). Without
``drop_last`` the last batch's missing real slots are filled with other real samples of the same
epoch (drawn without replacement), so every batch keeps its exact counts and every real sample
is seen at least once; with ``drop_last`` the incomplete remainder is skipped (a different part
each epoch). Synthetic indices are drawn without replacement from a random permutation of the
synthetic set, reshuffled whenever it runs out.

Determinism. Epoch ``e`` depends only on ``(seed, e)``. Iterating again moves to the next epoch;
``set_epoch(e)`` selects one explicitly (as with ``DistributedSampler``). Batches are produced in
the main process, so DataLoader workers see exactly these indices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Sized

import torch

from synthloop.errors import InputError
from synthloop.utils.seeding import make_generator

_RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_ratio(ratio: str | Sequence[int]) -> tuple[int, int]:
    """``"1:7"`` or ``(1, 7)`` -> ``(1, 7)``; both parts must be positive integers."""
    if isinstance(ratio, str):
        m = _RATIO.match(ratio)
        if m is None:
            raise InputError(f"ratio must look like 'real:synthetic' with whole numbers, e.g. '1:7', got {ratio!r}", field="ratio")
        r, s = int(m.group(1)), int(m.group(2))
    else:
        try:
            r, s = ratio
        except (TypeError, ValueError):
            raise InputError(f"ratio must be 'r:s' or a pair (r, s), got {ratio!r}", field="ratio") from None
        if isinstance(r, bool) or isinstance(s, bool) or int(r) != r or int(s) != s:
            raise InputError(f"ratio parts must be whole numbers, got {ratio!r}", field="ratio")
        r, s = int(r), int(s)
    if r <= 0 or s <= 0:
        raise InputError(f"both parts of the ratio must be positive (a batch mixes real and synthetic samples), got {r}:{s}", field="ratio")
    return r, s


def _indices(value: int | Sequence[int], name: str, offset: int = 0) -> torch.Tensor:
    if isinstance(value, bool):
        raise InputError(f"expected a count or a list of indices, got {value!r}", field=name)
    if isinstance(value, int):
        if value <= 0:
            raise InputError(f"needs at least one sample, got {value}", field=name)
        return torch.arange(offset, offset + value)
    idx = torch.as_tensor(list(value), dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0:
        raise InputError("needs a non-empty list of indices", field=name)
    if bool((idx < 0).any()):
        raise InputError("indices must be non-negative", field=name)
    return idx


class MixedBatchSampler:
    """Batches of ``batch_size`` indices with exactly ``real_per_batch`` real and
    ``synthetic_per_batch`` synthetic samples (see the module docstring for the rules).

    Args:
        real: number of real samples (indices ``0..n_real-1``) or the real indices themselves.
        synthetic: number of synthetic samples (indices ``n_real..n_real+n_syn-1`` when ``real``
            is a count, i.e. the second dataset of a ``ConcatDataset``) or the indices themselves.
            Explicit indices are used as given (indices into the dataset the loader reads).
        batch_size: samples per batch.
        ratio: ``"r:s"`` or ``(r, s)``, real to synthetic.
        max_synthetic_share: optional cap in (0, 1) on the synthetic share of a batch.
        seed: seed of the shuffles; or give ``generator`` (one seed is drawn from it).
        drop_last: skip the last, incomplete share of real samples instead of topping it up.
    Raises:
        InputError: a bad ratio, a batch size not divisible by ``r + s``, a cap that leaves no
            synthetic sample, empty index sets.
    """

    def __init__(
        self,
        real: int | Sequence[int],
        synthetic: int | Sequence[int],
        batch_size: int,
        ratio: str | Sequence[int] = "1:1",
        *,
        max_synthetic_share: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ):
        r, s = parse_ratio(ratio)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}", field="batch_size")
        if batch_size % (r + s):
            lo = (batch_size // (r + s)) * (r + s)
            options = [v for v in (lo, lo + r + s) if v > 0]
            raise InputError(
                f"batch_size {batch_size} cannot be split exactly {r}:{s}; use a multiple of {r + s} (e.g. {' or '.join(map(str, options))})",
                field="batch_size",
            )
        n_real = batch_size // (r + s) * r
        n_syn = batch_size - n_real
        if max_synthetic_share is not None:
            cap = float(max_synthetic_share)
            if not 0.0 < cap <= 1.0:
                raise InputError(f"max_synthetic_share must be in (0, 1], got {max_synthetic_share}", field="max_synthetic_share")
            n_syn = min(n_syn, math.floor(cap * batch_size + 1e-9))
            if n_syn == 0:
                raise InputError(f"max_synthetic_share {cap} leaves no synthetic sample in a batch of {batch_size}", field="max_synthetic_share")
            n_real = batch_size - n_syn
        self.real = _indices(real, "real")
        self.synthetic = _indices(synthetic, "synthetic", offset=int(real) if isinstance(real, int) else 0)
        self.batch_size = batch_size
        self.ratio = (r, s)
        self.real_per_batch = n_real
        self.synthetic_per_batch = n_syn
        self.drop_last = bool(drop_last)
        if generator is not None:
            if seed is not None:
                raise InputError("give seed or generator, not both", field="seed")
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.seed = 0 if seed is None else int(seed)
        self._epoch = 0
        if self.drop_last and len(self.real) < n_real:
            raise InputError(f"{len(self.real)} real samples cannot fill one batch of {n_real} real with drop_last", field="real")

    @classmethod
    def from_datasets(cls, real: Sized, synthetic: Sized, batch_size: int, ratio: str | Sequence[int] = "1:1", **kwargs) -> "MixedBatchSampler":
        """For ``ConcatDataset([real, synthetic])``: indices ``0..len(real)-1`` are real."""
        return cls(len(real), len(synthetic), batch_size, ratio, **kwargs)

    @property
    def synthetic_share(self) -> float:
        return self.synthetic_per_batch / self.batch_size

    @property
    def epoch(self) -> int:
        """The epoch the next iteration yields."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` (a pure function of ``(seed, epoch)``)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.real)
        return n // self.real_per_batch if self.drop_last else math.ceil(n / self.real_per_batch)

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (does not change :attr:`epoch`)."""
        g = make_generator(self.seed, "mixed-batches", int(epoch))
        n_batches, k = len(self), self.real_per_batch
        real = self.real[torch.randperm(len(self.real), generator=g)]
        short = n_batches * k - len(real)
        if short > 0:  # top up the last batch with other real samples of this epoch
            tail = real[(n_batches - 1) * k :]
            others = real[: (n_batches - 1) * k]
            real = torch.cat([real, others[torch.randperm(len(others), generator=g)[:short]]])
            if len(real) < n_batches * k:  # fewer real samples than one batch needs: repeat them
                reps = math.ceil(n_batches * k / len(tail))
                real = tail.repeat(reps)[torch.randperm(len(tail) * reps, generator=g)][: n_batches * k]
        need = n_batches * self.synthetic_per_batch
        perms = [self.synthetic[torch.randperm(len(self.synthetic), generator=g)] for _ in range(math.ceil(need / len(self.synthetic)))]
        syn = torch.cat(perms)[:need] if perms else self.synthetic[:0]
        real_b = real[: n_batches * k].view(n_batches, k)
        syn_b = syn.view(n_batches, self.synthetic_per_batch)
        return torch.cat([real_b, syn_b], 1).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self._epoch
        self._epoch += 1
        yield from self.batches(epoch)
