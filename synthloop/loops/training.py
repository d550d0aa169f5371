"""Supervised training of image classifiers on tensors held on the training device.

:func:`fit_classifier` is the epoch-based classifier training behind the TERSE target phase, the
MNIST baselines and the reference classifier: data stay on the device as tensors, each epoch
draws its order from an explicit ``torch.Generator`` (on the CPU, so the order is the same on
every device), and batches are gathered by index, with no per-sample Python work.
:func:`train_classifier` is the step-based one behind the refiners' reference classifiers. Both
run :func:`synthloop.loops.trainer.fit`.

Dropout and other module randomness draw from torch's global generator, which has no
per-module handle; :func:`scoped_rng` seeds it inside a ``torch.random.fork_rng`` block so a
phase replays exactly (what checkpoint/resume needs) and the caller's global state is restored
afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.data.affnist import apply_affnist, sample_affnist_params
from synthloop.errors import InputError
from synthloop.loops.trainer import fit
from synthloop.metrics.classification import check_dataset, check_labels, model_device
from synthloop.models.classifiers import MNISTClassifier
from synthloop.models.targets import ClassifierTarget, freeze
from synthloop.utils.progress import Progress
from synthloop.utils.seeding import derive_seed, make_generator


@contextlib.contextmanager
def scoped_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global RNG (CPU, and ``device`` when it is a GPU) for the block, then restore it."""
    device = torch.device(device)
    accel = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=accel, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD over the trainable parameters of ``model`` (TERSE A.1: lr 1e-2, momentum 0.5)."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum, weight_decay=weight_decay)


def _epoch_index(sizes: Sequence[int], subsample: Sequence[int | None], generator: torch.Generator) -> list[torch.Tensor]:
    """Per source, the (CPU, int64) indices used this epoch: all of them or a random subset."""
    out = []
    for n, k in zip(sizes, subsample):
        if k is None or k >= n:
            out.append(torch.arange(n))
        else:
            out.append(torch.randperm(n, generator=generator)[:k])
    return out


def _cross_entropy(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels)


def _epoch_batches(
    sources: Sequence[tuple[torch.Tensor, torch.Tensor]],
    sizes: Sequence[int],
    subsample: Sequence[int | None],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches on ``device``: per epoch, the union of the sources (or their
    subsets) in a random order; batches of one sample are skipped (BatchNorm cannot train on them)."""
    for _ in range(epochs):
        index = _epoch_index(sizes, subsample, generator)
        offsets = torch.tensor([0] + [len(i) for i in index]).cumsum(0)
        order = torch.randperm(int(offsets[-1]), generator=generator)
        for start in range(0, order.numel(), batch_size):
            sel = order[start : start + batch_size]
            if sel.numel() < 2:
                continue
            xs, ys = [], []
            for k, (x, y) in enumerate(sources):
                part = sel[(sel >= offsets[k]) & (sel < offsets[k + 1])] - offsets[k]
                if part.numel():
                    rows = index[k][part].to(x.device)
                    xs.append(x[rows])
                    ys.append(y[rows])
            yield torch.cat(xs).to(device, non_blocking=True), torch.cat(ys).to(device, non_blocking=True)


def fit_classifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sources: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    subsample: Sequence[int | None] | None = None,
    progress: Progress | None = None,
    task: str = "train",
) -> dict[str, float]:
    """Train ``model`` with cross-entropy for ``epochs`` passes over the union of ``sources``.

    Args:
        model: classifier ``Tensor[B, C, H, W] -> logits Tensor[B, num_classes]``, put in ``train()``.
        optimizer: optimiser over ``model``'s parameters (its state carries over between calls).
        sources: ``(images Tensor[N_k, C, H, W], labels Tensor[N_k])`` pairs on the model's device;
            each epoch shuffles all of them together.
        subsample: per source, how many samples to draw (without replacement) into each epoch;
            ``None`` entries (the default) use the whole source every epoch.
        generator: CPU generator for the order (and the subsets).
        progress: called with ``(task, batches done, batches total)``.
    Returns:
        ``{"loss": mean training loss, "batches": count, "samples": per-epoch sample count}``.

    Raises:
        InputError: no data, mismatched labels, or a model whose output width is not ``num_classes``.
    """
    if not sources:
        raise InputError("no training data", field="sources")
    for k, (x, y) in enumerate(sources):
        check_dataset(x, y, name=f"sources[{k}]")
        check_labels(y, num_classes)
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    subsample = list(subsample) if subsample is not None else [None] * len(sources)
    if len(subsample) != len(sources):
        raise ValueError(f"subsample has {len(subsample)} entries for {len(sources)} sources")
    device = model_device(model)
    with freeze(model):  # eval mode: the check must not draw from the dropout RNG
        ClassifierTarget(model, num_classes).check_output(sources[0][0][:2].to(device))
    sizes = [x.shape[0] for x, _ in sources]
    per_epoch = sum(n if k is None else min(n, k) for n, k in zip(sizes, subsample))
    n_batches = sum(1 for s in range(0, per_epoch, batch_size) if min(batch_size, per_epoch - s) >= 2)
    total = n_batches * epochs
    batches = _epoch_batches(sources, sizes, subsample, epochs=epochs, batch_size=batch_size, generator=generator, device=device)
    on_step = None if progress is None else (lambda step, _loss: progress(task, step, total))
    losses = fit(model, optimizer, batches, _cross_entropy, on_step=on_step, what="classifier")
    loss_sum = torch.zeros((), device=device)
    for loss in losses:
        loss_sum += loss
    done = len(losses)
    return {"loss": float(loss_sum) / max(done, 1), "batches": float(done), "samples": float(per_epoch)}


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    generator: torch.Generator,
) -> list[float]:
    """Train ``model`` (on its device) with Adam and cross-entropy on ``steps`` random batches of
    ``images`` ``Tensor[N, C, H, W]`` / ``labels`` ``Tensor[N]`` drawn (with replacement) from
    ``generator``. Returns the losses; the model is left in ``eval()`` mode."""
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):
            idx = torch.randint(images.shape[0], (batch_size,), generator=generator)
            yield images[idx].to(device), labels[idx].to(device)

    losses = fit(model, opt, batches(), _cross_entropy, what="classifier")
    model.eval()
    return [float(v) for v in losses]


def recipe_copy(images: torch.Tensor, generator: torch.Generator, chunk: int = 4096) -> torch.Tensor:
    """One AffNIST-recipe version of each of ``images`` ``Tensor[N, 1, 40, 40]`` (same order), drawn in
    chunks from ``generator``."""
    parts = []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        parts.append(apply_affnist(part, sample_affnist_params(part, generator)))
    return torch.cat(parts)


def train_reference_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int = 10,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> nn.Module:
    """The reference classifier of the degenerate-sample check: an :class:`MNISTClassifier`
    trained on clean data, i.e. the padded MNIST ``images`` ``Tensor[N, 1, 40, 40]`` plus one
    random AffNIST-recipe version of each. Not part of the paper, so it uses a faster schedule
    (SGD lr 0.05, momentum 0.9) than the targets. Returned in ``eval()`` mode."""
    device = torch.device(device)
    images, labels = images.to(device), labels.to(device)
    with scoped_rng(derive_seed(seed, "reference", "init"), device):
        model = MNISTClassifier(num_classes=num_classes, input_size=tuple(images.shape[-2:])).to(device)
    generator = make_generator(seed, "reference", "data")
    recipe = recipe_copy(images, generator)
    with scoped_rng(derive_seed(seed, "reference", "dropout"), device):
        fit_classifier(
            model,
            sgd(model, lr, momentum),
            [(images, labels), (recipe, labels)],
            num_classes=num_classes,
            epochs=epochs,
            batch_size=batch_size,
            generator=generator,
            progress=progress,
            task="reference classifier",
        )
    return model.eval()
