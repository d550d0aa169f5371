"""Training and evaluating detection targets on in-memory tensors (real, or real + synthetic).

:func:`train_detector` is the one routine behind the detection baseline, TERSE's T phase
(A.2: T is fine-tuned on real and synthetic images at 1:1 with S frozen) and the benchmark's
fine-tuning of every method, so methods differ only in where their synthetic images come from.

- Batches: without synthetic data an epoch is one pass over the real images in a fresh random
  order; with synthetic data every batch holds exactly ``ratio`` real:synthetic images
  (:class:`~synthloop.loops.mixing.MixedBatchSampler`: an epoch is one pass over the real set,
  synthetic images are drawn without replacement and reshuffled when they run out).
- Mode: the model trains in ``train()`` mode (BatchNorm batch statistics, dropout on) and is
  returned in the mode it came in.
- Optimiser: AdamW over the trainable parameters, one-cycle learning rate peaking at ``lr``
  (or constant), gradient-norm clipping at 10 (detection losses spike on the first batches of
  a from-scratch model), run by :func:`synthloop.loops.trainer.fit`.
- Augmentation (``augment=True``): per image, a random permutation of the colour channels and a
  horizontal flip with probability 1/2 (boxes flipped with it). Both keep digits, and objects in
  general, recognisable; they only counter over-fitting to colours and layout of small sets.
- Determinism: the batch order and augmentation draw from generators derived from ``seed``;
  module randomness (dropout, Faster R-CNN's proposal sampling) draws from torch's global RNG,
  seeded for the call by :func:`~synthloop.loops.training.scoped_rng` and restored afterwards,
  so two calls with the same inputs give the same weights.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from synthloop.data.dataset import Dataset
from synthloop.errors import InputError
from synthloop.loops.mixing import MixedBatchSampler
from synthloop.loops.trainer import fit
from synthloop.loops.training import scoped_rng
from synthloop.metrics.classification import model_device
from synthloop.metrics.detection import coco_ap, detect
from synthloop.models.detection import DetectionTarget
from synthloop.utils.progress import StepProgress
from synthloop.utils.seeding import derive_seed, make_generator

SCHEDULES = ("onecycle", "constant")
GRAD_CLIP = 10.0


@dataclass
class DetectorTrainLog:
    """What :func:`train_detector` did: mean loss per epoch, optimiser steps, wall seconds and
    the number of images the model saw (real and synthetic)."""

    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    images_seen: int = 0


def _check_set(images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{name} must be a Tensor[N, 3, H, W], got {shape}", field=name)
    if len(targets) != images.shape[0]:
        raise InputError(f"{name}: got {len(targets)} targets for {images.shape[0]} images", field=f"{name}_targets")


def _flip_target(target: Mapping[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    boxes = target["boxes"]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1) if boxes.numel() else boxes
    return {**target, "boxes": flipped}


def _augment(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], g: torch.Generator) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Random colour-channel permutation and horizontal flip (boxes follow), per image."""
    n, _, _, w = images.shape
    perms = torch.stack([torch.randperm(3, generator=g) for _ in range(n)]).to(images.device)
    flips = (torch.rand(n, generator=g) < 0.5).tolist()
    out = torch.gather(images, 1, perms[:, :, None, None].expand_as(images))
    if any(flips):
        idx = torch.tensor(flips, device=images.device)
        out = torch.where(idx[:, None, None, None], out.flip(-1), out)
        targets = [_flip_target(t, w) if f else t for t, f in zip(targets, flips)]
    return out, targets


@contextlib.contextmanager
def _restore_mode(model: torch.nn.Module, training: bool) -> Iterator[None]:
    try:
        yield
    finally:
        model.train(training)


def _batches(n_real: int, n_syn: int, batch_size: int, ratio: str, max_share: float | None, epochs: int, seed: int) -> list[list[list[int]]]:
    """Per epoch, the batches of indices into ``cat([real, synthetic])``."""
    if n_syn == 0:
        g = make_generator(seed, "detector-epochs")
        out = []
        for _ in range(epochs):
            order = torch.randperm(n_real, generator=g).tolist()
            out.append([order[i : i + batch_size] for i in range(0, n_real, batch_size)])
        return out
    sampler = MixedBatchSampler(n_real, n_syn, batch_size, ratio, max_synthetic_share=max_share, seed=derive_seed(seed, "detector-mix"))
    return [sampler.batches(e) for e in range(epochs)]


def train_detector(
    target: DetectionTarget,
    images: torch.Tensor,
    targets: Sequence[Mapping[str, torch.Tensor]],
    *,
    synthetic_images: torch.Tensor | None = None,
    synthetic_targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ratio: str = "1:1",
    max_synthetic_share: float | None = None,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    schedule: str = "onecycle",
    augment: bool = False,
    seed: int = 0,
    progress: StepProgress | None = None,
) -> DetectorTrainLog:
    """Train ``target.model`` in place on real images, optionally mixed with synthetic ones.

    Args:
        target: the detector adapter; its model trains on its own device (the data are moved
            there batch by batch, so they may stay on the CPU).
        images, targets: the real set, ``Tensor[N, 3, H, W]`` in [0, 1] and torchvision targets
            (``boxes`` xyxy pixels, ``labels`` ``1..C``); images without objects are allowed.
        synthetic_images, synthetic_targets: optional synthetic set mixed in at ``ratio``.
        ratio: ``"real:synthetic"`` per batch (``batch_size`` must be a multiple of the sum).
        max_synthetic_share: optional cap on the synthetic share of a batch.
        epochs: passes over the real set.
        schedule: ``"onecycle"`` (peak ``lr`` at 30 % of the steps, cosine annealing) or ``"constant"``.
        augment: random channel permutation + horizontal flip (see the module docstring).
        seed: seeds the batch order, the augmentation and module randomness.
        progress: called after every step with ``(step, total_steps, loss)``.

    Returns:
        :class:`DetectorTrainLog`.

    Raises:
        InputError: malformed sets, synthetic images without targets (or of another size), a bad
            ratio or batch size, a non-finite loss (naming the step), an unknown schedule.
    """
    _check_set(images, targets, "images")
    if (synthetic_images is None) != (synthetic_targets is None):
        raise InputError("give synthetic_images and synthetic_targets together", field="synthetic_targets")
    if synthetic_images is not None:
        _check_set(synthetic_images, synthetic_targets, "synthetic_images")
        if synthetic_images.shape[-2:] != images.shape[-2:]:
            raise InputError(
                f"synthetic images are {tuple(synthetic_images.shape[-2:])} but real ones {tuple(images.shape[-2:])}; "
                "render them at the real images' size",
                field="synthetic_images",
            )
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}", field="schedule")
    if epochs < 0 or batch_size < 1:
        raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}", field="epochs")
    if images.shape[0] == 0:
        raise InputError("the real set is empty", field="images")
    n_syn = 0 if synthetic_images is None else synthetic_images.shape[0]
    all_targets = list(targets) + (list(synthetic_targets) if n_syn else [])
    plan = _batches(images.shape[0], n_syn, batch_size, ratio, max_synthetic_share, epochs, seed)
    total = sum(len(e) for e in plan)
    log = DetectorTrainLog()
    if total == 0:
        return log

    model = target.model
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.3)
    else:
        sched = None
    g_aug = make_generator(seed, "detector-augment")

    def loss_fn(_model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        real_idx = [i for i in idx if i < images.shape[0]]
        syn_idx = [i - images.shape[0] for i in idx if i >= images.shape[0]]
        parts = [images[real_idx]] + ([synthetic_images[syn_idx]] if syn_idx else [])
        batch = torch.cat(parts).to(device, torch.float32)
        tgts = [{k: torch.as_tensor(v).to(device) for k, v in all_targets[i].items()} for i in idx]
        if augment:
            batch, tgts = _augment(batch, tgts, g_aug)
        return target.loss(batch, tgts)

    on_step = None if progress is None else (lambda step, loss: progress(step, total, float(loss)))
    start = time.perf_counter()
    was_training = model.training
    model.train()  # BatchNorm statistics and dropout in training behaviour, whatever the caller left
    with scoped_rng(derive_seed(seed, "detector-modules"), device), _restore_mode(model, was_training):
        batches = itertools.chain.from_iterable(plan)
        losses = fit(model, opt, batches, loss_fn, scheduler=sched, grad_clip=GRAD_CLIP, on_step=on_step, what="detection")
    values = iter([float(v) for v in losses])
    for epoch_batches in plan:
        running, count = 0.0, 0
        for idx in epoch_batches:
            running += next(values)
            count += 1
            log.images_seen += len(idx)
        log.epoch_losses.append(running / max(count, 1))
    log.steps = len(losses)
    log.seconds = time.perf_counter() - start
    if not all(math.isfinite(v) for v in log.epoch_losses):  # pragma: no cover - caught per step above
        raise InputError("non-finite epoch loss", field="lr")
    return log


def evaluate_detector(target: DetectionTarget, dataset: Dataset, *, batch_size: int = 32) -> dict[str, float]:
    """COCO box AP of ``target`` on ``dataset``: ``{"ap50", "ap60", "ap70", "ap80", "ap"}`` in [0, 1]
    (:func:`~synthloop.metrics.detection.coco_ap` over :func:`~synthloop.metrics.detection.detect`)."""
    return coco_ap(dataset, detect(target, dataset, batch_size=batch_size))


__all__ = ["DetectorTrainLog", "GRAD_CLIP", "SCHEDULES", "evaluate_detector", "train_detector"]
