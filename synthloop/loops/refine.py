"""Synthetic-to-real refinement: CycleGAN, MrGAN (two stacked CycleGANs) and PixelDA training.

Three refiners turn synthetic images into images that look like a set of real ones while
keeping their labels:

- :class:`CycleGANTrainer`: two ResNet generators (synthetic -> real ``G``, real -> synthetic
  ``F``) and two PatchGAN discriminators with least-squares (LSGAN) losses, cycle consistency
  ``lambda_cycle = 10``, an optional identity loss (``0.5 * lambda_cycle``) and CycleGAN's
  history pool of 50 fakes. MrGAN's extras are options: several generator updates per
  discriminator update, label smoothing and flipping for D, L1 to the input, and pre-training
  the generators (L1 to the input) and the discriminators before the adversarial phase. With
  foreground masks, Wang et al.'s separate losses are added: cycle L1 on the background and a
  hue (grey: intensity) loss on the foreground.
- :class:`MrGANTrainer`: stage 1 is a CycleGAN between synthetic ``S`` and real ``R``; it gives
  refined synthetic ``RS = G1(S)`` and refined real ``RR = F1(R)``. Stage 2 is a second CycleGAN
  between one of ``RR <-> RS`` (``"rr_rs"``), ``R <-> RS`` (``"r_rs"``) or ``RR <-> S``
  (``"rr_s"``).
- :class:`PixelDATrainer`: generator ``G(x, z)``, discriminator ``D`` (standard GAN loss), and a
  task classifier ``T`` trained alongside on refined (and source) images; the generator
  minimises ``alpha * L_domain + beta * L_task + gamma * L_content`` where ``L_content`` is
  PixelDA's masked pairwise MSE (:func:`masked_pmse`).

Label-aligned pairs (MrGAN appendix 5): when both sides have labels, every synthetic sample of
class ``c`` in a batch is paired with a real sample of class ``c`` (:class:`PairSampler`).

Every step returns its losses as a ``dict[str, float]``. Everything random (weight init, batch
sampling, history pool, label noise, PixelDA's ``z``) draws from ``torch.Generator`` s derived
from the seed, and a checkpoint holds their states, so a resumed run continues exactly as an
uninterrupted one. :class:`DivergenceMonitor` watches for non-finite losses and mode collapse
(the refined batch's per-pixel standard deviation across samples falling below a threshold)
and raises :class:`DivergenceError` or records a :class:`DivergenceEvent`.

:func:`run_refine` is the whole job behind ``synthloop refine``: read folders, train with
periodic checkpoints, write the refined folder, measure label preservation and foreground IoU.
"""

from __future__ import annotations

import abc

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import kornia.color
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from synthloop.config import Config
from synthloop.data.folders import ImageFolder, check_same_classes, read_image_folder, write_image_folder
from synthloop.errors import InputError, SynthloopError
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.metrics.classification import accuracy
from synthloop.metrics.refinement import foreground_iou, label_preservation, label_preservation_per_class
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.discriminator import PatchDiscriminator, d_loss, g_loss
from synthloop.models.refiners import PixelDAGenerator, ResnetGenerator, SmallResNet, init_gan_weights
from synthloop.models.targets import freeze
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.seeding import derive_seed, make_generator

# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

Pair = tuple[float, float]


class GeneratorConfig(Config):
    """:class:`~synthloop.models.refiners.ResnetGenerator` size (MrGAN: 32 base channels, 9 blocks)."""

    base_channels: int = Field(16, ge=1)
    n_downsample: int = Field(2, ge=0)
    n_blocks: int = Field(4, ge=0)
    norm: Literal["instance", "batch", "none"] = "instance"
    init_std: float = Field(0.02, gt=0)


class DiscriminatorConfig(Config):
    """:class:`~synthloop.models.discriminator.PatchDiscriminator` size (``width`` 1.0 = 64-512 channels)."""

    width: float = Field(0.5, gt=0)
    init_std: float = Field(0.02, gt=0)


class CycleGANConfig(Config):
    """One CycleGAN (CycleGAN paper defaults; MrGAN's extras off).

    ``steps`` counts adversarial iterations; ``pretrain_g_steps`` + ``pretrain_d_steps`` come
    first. The learning rates stay constant for ``decay_fraction * steps`` iterations, then fall
    linearly to zero (CycleGAN: 100 + 100 epochs; MrGAN: 20k + 20k iterations).
    """

    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    steps: int = Field(10_000, ge=0)
    batch_size: int = Field(32, ge=1)
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    betas: Pair = (0.5, 0.999)
    decay_fraction: float = Field(0.5, ge=0, le=1)
    lambda_cycle: float = Field(10.0, ge=0)
    identity: bool = False
    identity_ratio: float = Field(0.5, ge=0)
    lambda_l1: float = Field(0.0, ge=0)
    lambda_fg: float = Field(1.0, ge=0)
    lambda_bg: float = Field(1.0, ge=0)
    g_updates_per_step: int = Field(1, ge=1)
    pool_size: int = Field(50, ge=0)
    real_label_range: Pair | None = None
    fake_label_range: Pair | None = None
    label_flip_prob: float = Field(0.0, ge=0, le=1)
    pretrain_g_steps: int = Field(0, ge=0)
    pretrain_d_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> CycleGANConfig:
        for name in ("real_label_range", "fake_label_range"):
            v = getattr(self, name)
            if v is not None and v[0] > v[1]:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {v}")
        return self


class MrGANStageConfig(CycleGANConfig):
    """A CycleGAN with MrGAN's training details (appendix 6) as defaults.

    Discriminator lr 1e-5 (generators 2e-4); 5 generator updates per discriminator update;
    label smoothing (target-domain labels ~ U(0.7, 1.2), source-domain ~ U(0.0, 0.3)); generator
    pre-training with L1 for 1000 iterations and discriminator pre-training for 500; 40k
    iterations, linear decay after 20k. The appendix says D's labels are flipped "with the
    probability 0.9", which would invert D's task on most images; the usual trick it refers to
    flips a small fraction, so the default here is 0.1.
    """

    steps: int = Field(40_000, ge=0)
    lr_d: float = Field(1e-5, gt=0)
    g_updates_per_step: int = Field(5, ge=1)
    real_label_range: Pair | None = (0.7, 1.2)
    fake_label_range: Pair | None = (0.0, 0.3)
    label_flip_prob: float = Field(0.1, ge=0, le=1)
    pretrain_g_steps: int = Field(1000, ge=0)
    pretrain_d_steps: int = Field(500, ge=0)


Stage2Mode = Literal["rr_rs", "r_rs", "rr_s"]
STAGE2_MODES: tuple[str, ...] = ("rr_rs", "r_rs", "rr_s")


class MrGANConfig(Config):
    """MrGAN: stage 1 ``R <-> S``; stage 2 ``RR <-> RS`` (``rr_rs``), ``R <-> RS`` (``r_rs``) or ``RR <-> S`` (``rr_s``)."""

    stage1: MrGANStageConfig = Field(default_factory=MrGANStageConfig)
    stage2: MrGANStageConfig = Field(default_factory=MrGANStageConfig)
    stage2_mode: Stage2Mode = "rr_rs"


class PixelDAGeneratorConfig(Config):
    """:class:`~synthloop.models.refiners.PixelDAGenerator` size (paper: 64 channels, 6 blocks)."""

    noise_dim: int = Field(10, ge=1)
    base_channels: int = Field(32, ge=1)
    n_blocks: int = Field(3, ge=0)
    norm: Literal["instance", "batch", "none"] = "batch"
    init_std: float = Field(0.02, gt=0)


class ClassifierConfig(Config):
    """:class:`~synthloop.models.refiners.SmallResNet` size (MrGAN appendix 3: 16-32-64, 3 blocks)."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = Field(3, ge=1)


class PixelDAConfig(Config):
    """PixelDA (Bousmalis et al. 2017).

    Optimiser as in the paper: Adam, lr 1e-3, beta1 0.5, multiplied by 0.95 every 20,000 steps;
    batch 32. Loss weights: ``alpha`` (domain), ``beta`` (task), ``gamma`` (content), set to the
    LineMOD values the paper reports (its MNIST experiments have no object masks). The authors'
    released code defaults to 1, 1 and 0 instead; tune them per data set. ``task_on_source`` also
    trains T on the unrefined source images (the paper's task loss has both terms).
    """

    generator: PixelDAGeneratorConfig = Field(default_factory=PixelDAGeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    steps: int = Field(10_000, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    betas: Pair = (0.5, 0.999)
    lr_decay_rate: float = Field(0.95, gt=0, le=1)
    lr_decay_steps: int = Field(20_000, ge=1)
    alpha: float = Field(0.011, ge=0)
    beta: float = Field(0.01, ge=0)
    gamma: float = Field(0.39, ge=0)
    task_on_source: bool = True


class DivergenceConfig(Config):
    """What counts as divergence and what happens then.

    ``action="raise"`` stops with :class:`DivergenceError`; ``"record"`` keeps a
    :class:`DivergenceEvent` and carries on (a step with a non-finite loss makes no update).
    Mode collapse: the refined batch's per-pixel std across samples, averaged over pixels, below
    ``min_batch_std`` for ``patience`` consecutive steps.
    """

    action: Literal["raise", "record"] = "raise"
    min_batch_std: float = Field(1e-3, ge=0)
    patience: int = Field(1, ge=1)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass
class Domain:
    """One side of a translation: images, optional labels and foreground masks.

    Attributes:
        images: ``Tensor[N, C, H, W]`` float in [0, 1].
        labels: ``Tensor[N]`` int64 class indices, or ``None``.
        masks: ``Tensor[N, 1, H, W]`` float in {0, 1} (1 = foreground), or ``None``.
        name: how errors and logs name this side.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    name: str = "images"

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise InputError(f"images must be a float tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}", field=self.name)
        if x.shape[0] == 0:
            raise InputError("no images (N = 0)", field=self.name)
        if not torch.isfinite(x).all():
            raise InputError("images contain NaN or infinite values", field=self.name)
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InputError(f"images must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]", field=self.name)
        if self.labels is not None:
            y = self.labels
            if y.shape != (x.shape[0],) or y.is_floating_point():
                raise InputError(
                    f"labels must be an integer tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}", field=f"{self.name}.labels"
                )
            if int(y.min()) < 0:
                raise InputError("labels must be >= 0", field=f"{self.name}.labels")
            self.labels = y.long()
        if self.masks is not None:
            m = self.masks
            if m.shape != (x.shape[0], 1, x.shape[2], x.shape[3]):
                raise InputError(
                    f"masks must have shape ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]}), got {tuple(m.shape)}", field=f"{self.name}.masks"
                )
            self.masks = (m != 0).to(x.dtype)

    @classmethod
    def from_folder(cls, folder: ImageFolder, name: str | None = None) -> Domain:
        return cls(folder.images, folder.labels, folder.masks, name=name or str(folder.root))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(images, labels, masks)`` of the samples ``idx`` ``Tensor[B]``, on ``device``."""
        images = self.images[idx].to(device, non_blocking=True)
        labels = self.labels[idx].to(device, non_blocking=True) if self.labels is not None else None
        masks = self.masks[idx].to(device, non_blocking=True) if self.masks is not None else None
        return images, labels, masks


def check_compatible(source: Domain, target: Domain) -> None:
    """Raise :class:`InputError` unless both sides have the same channel count and image size."""
    if source.channels != target.channels:
        raise InputError(
            f"{source.name} has {source.channels}-channel images but {target.name} has {target.channels}-channel images; "
            "set data.channels to 1 or 3 to convert both",
            field="channels",
        )
    if source.size != target.size:
        raise InputError(
            f"{source.name} images are {source.size[1]}x{source.size[0]} but {target.name} images are "
            f"{target.size[1]}x{target.size[0]}; both sides must have the same size",
            field="size",
        )


class PairSampler:
    """Draws index batches ``(source_idx, target_idx)`` with replacement, optionally label-aligned.

    Aligned (``label_aligned`` and both sides labelled): the source indices are uniform, and each
    target index is uniform among the target samples *of the same class* (MrGAN appendix 5).
    Otherwise both are uniform and independent. All draws come from ``generator`` (CPU).

    Raises:
        InputError: aligned sampling, and a source class has no target sample.
    """

    def __init__(self, source: Domain, target: Domain, *, label_aligned: bool, generator: torch.Generator):
        self.source = source
        self.target = target
        self.generator = generator
        self.aligned = bool(label_aligned and source.labels is not None and target.labels is not None)
        if self.aligned:
            assert source.labels is not None and target.labels is not None
            k = int(max(source.labels.max(), target.labels.max())) + 1
            self._counts = torch.bincount(target.labels, minlength=k)
            missing = sorted(set(torch.unique(source.labels).tolist()) - set(torch.nonzero(self._counts).flatten().tolist()))
            if missing:
                raise InputError(
                    f"label-aligned pairing: class(es) {', '.join(map(str, missing))} of {source.name} have no sample in {target.name}",
                    field="labels",
                )
            self._order = torch.argsort(target.labels, stable=True)
            self._offsets = torch.cumsum(self._counts, 0) - self._counts

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(source_idx, target_idx)``, each ``Tensor[batch_size]`` int64 on the CPU."""
        g = self.generator
        src = torch.randint(len(self.source), (batch_size,), generator=g)
        if not self.aligned:
            return src, torch.randint(len(self.target), (batch_size,), generator=g)
        assert self.source.labels is not None
        cls = self.source.labels[src]
        u = torch.rand(batch_size, generator=g, dtype=torch.float64)
        counts = self._counts[cls]
        pos = self._offsets[cls] + torch.minimum((u * counts).long(), counts - 1)
        return src, self._order[pos]


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): D sees a mix of current and past fakes.

    Until the pool holds ``size`` images, every image is stored and returned. Then each image is,
    with probability 1/2, swapped for a random stored one (which is returned and replaced), else
    returned as is. ``size = 0`` returns the input unchanged.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.buffer: torch.Tensor | None = None
        self.count = 0

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``Tensor[B, C, H, W]`` -> ``Tensor[B, C, H, W]`` (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.buffer is None:
            self.buffer = images.new_zeros((self.size, *images.shape[1:]))
        n = images.shape[0]
        coin = torch.rand(n, generator=generator)
        slot = torch.randint(self.size, (n,), generator=generator)
        out = images.clone()
        for i in range(n):
            if self.count < self.size:
                self.buffer[self.count] = images[i]
                self.count += 1
            elif coin[i] > 0.5:
                j = int(slot[i])
                out[i] = self.buffer[j]
                self.buffer[j] = images[i]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": None if self.buffer is None else self.buffer.cpu(), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.buffer = None if state["buffer"] is None else state["buffer"].to(device)
        self.count = int(state["count"])


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def lsgan_loss(pred: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss ``mean((pred - target)^2)``; ``target`` a number or ``Tensor[N, 1, 1, 1]``."""
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(pred, float(target))
    return (pred - target.to(pred.dtype)).pow(2).mean()


def masked_pmse(refined: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PixelDA's content-similarity loss (pairwise mean squared error) inside a foreground mask.

    With ``d = source - refined`` restricted to the ``k`` masked entries of a sample,
    ``(1/k) sum d_i^2 - (1/k^2) (sum d_i)^2``, i.e. ``1/(2k^2) sum_ij (d_i - d_j)^2``: it penalises
    differences *between* pixel changes, not a uniform change of the object. With a full mask
    this is exactly the paper's ``1/k ||d||^2 - 1/k^2 (d^T 1)^2``; the paper's masked form keeps
    ``k`` = all pixels, which also penalises a uniform shift inside the mask relative to the zeros
    outside it, so ``k`` here is the mask's size. Averaged over the batch; a sample with an empty
    mask contributes 0.

    Args:
        refined, source: ``Tensor[N, C, H, W]``.
        mask: ``Tensor[N, 1, H, W]`` (or ``[N, C, H, W]``), 1 = foreground; ``None`` = whole image.
    Returns:
        scalar.
    """
    d = (source - refined).flatten(1)
    if mask is None:
        m = torch.ones_like(d)
    else:
        m = mask.to(d.dtype).expand_as(source).flatten(1)
    k = m.sum(1)
    kc = k.clamp(min=1.0)
    per = (m * d * d).sum(1) / kc - ((m * d).sum(1) / kc).pow(2)
    return torch.where(k > 0, per, torch.zeros_like(per)).mean()


def background_l1(reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cycle-consistency L1 on the background only (Wang et al.'s ``L_bg``): mean of
    ``|rec - x|`` over pixels where ``mask`` ``Tensor[N, 1, H, W]`` is 0. Images ``Tensor[N, C, H, W]`` -> scalar."""
    w = (1.0 - mask).expand_as(original)
    return (w * (reconstructed - original).abs()).sum() / w.sum().clamp(min=1.0)


def foreground_hue_l1(reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s foreground loss ``L_fg``: hue difference inside the mask.

    RGB: hue from :func:`kornia.color.rgb_to_hsv`, circular difference ``min(|dh|, 2 pi - |dh|)``
    scaled to [0, 1]. Grey images have no hue, so the intensity L1 is used. Mean over masked
    pixels. ``Tensor[N, C, H, W]`` images, ``Tensor[N, 1, H, W]`` mask -> scalar.
    """
    if original.shape[1] == 3:
        h_rec = kornia.color.rgb_to_hsv(reconstructed)[:, :1]
        h_org = kornia.color.rgb_to_hsv(original)[:, :1]
        dh = (h_rec - h_org).abs()
        diff = torch.minimum(dh, 2 * math.pi - dh) / math.pi
        w = mask
    else:
        diff = (reconstructed - original).abs()
        w = mask.expand_as(original)
    return (w * diff).sum() / w.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------------


@dataclass
class DivergenceEvent:
    """A detected divergence: ``kind`` is ``"non_finite_loss"`` or ``"mode_collapse"``."""

    step: int
    kind: str
    message: str
    value: float | None = None
    source: str = ""
    losses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DivergenceError(SynthloopError):
    """Training diverged; ``event`` says how."""

    def __init__(self, event: DivergenceEvent):
        self.event = event
        super().__init__(event.message)


class DivergenceMonitor:
    """Checks losses and refined outputs each step; raises or records per :class:`DivergenceConfig`."""

    def __init__(self, cfg: DivergenceConfig | None = None, source: str = ""):
        self.cfg = cfg or DivergenceConfig()
        self.source = source
        self.events: list[DivergenceEvent] = []
        self._low_steps = 0

    def _fire(self, event: DivergenceEvent) -> None:
        self.events.append(event)
        if self.cfg.action == "raise":
            raise DivergenceError(event)

    def check_losses(self, step: int, losses: Mapping[str, torch.Tensor]) -> bool:
        """``True`` if every loss is finite; otherwise fire a ``non_finite_loss`` event and return ``False``
        (the caller then skips the update)."""
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return True
        where = f"{self.source}: " if self.source else ""
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        tail = "training stopped" if self.cfg.action == "raise" else "the update was skipped"
        self._fire(
            DivergenceEvent(step, "non_finite_loss", f"{where}step {step}: non-finite loss ({shown}); {tail}", None, self.source, values)
        )
        return False

    def check_outputs(self, step: int, refined: torch.Tensor) -> float:
        """Per-batch std of ``refined`` ``Tensor[B, C, H, W]`` (std across the batch per pixel, averaged);
        fires ``mode_collapse`` once it has stayed below ``min_batch_std`` for ``patience`` steps.
        Returns the std (NaN for ``B < 2``, where it is undefined and not checked)."""
        if refined.shape[0] < 2:
            return float("nan")
        std = float(refined.detach().float().std(0).mean())
        if not math.isfinite(std):
            return std  # non-finite outputs show up as non-finite losses
        self._low_steps = self._low_steps + 1 if std < self.cfg.min_batch_std else 0
        if self._low_steps == self.cfg.patience:
            where = f"{self.source}: " if self.source else ""
            self._fire(
                DivergenceEvent(
                    step,
                    "mode_collapse",
                    f"{where}step {step}: mode collapse: refined outputs' per-batch std {std:.3g} < {self.cfg.min_batch_std:g} "
                    f"for {self.cfg.patience} step(s) (the generator ignores its input)",
                    std,
                    self.source,
                )
            )
        return std

    def state_dict(self) -> dict[str, Any]:
        return {"events": [e.to_dict() for e in self.events], "low_steps": self._low_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.events = [DivergenceEvent(**e) for e in state["events"]]
        self._low_steps = int(state["low_steps"])


# --------------------------------------------------------------------------------------------
# shared trainer machinery
# --------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else as ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"invalid device {device!r} ({e})", field="device") from None


def _requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def _floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def apply_model(model: nn.Module, images: torch.Tensor, *extra: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Run ``model`` frozen (eval mode, state restored after) over ``images`` ``Tensor[N, C, H, W]`` in
    chunks on the model's device; extra per-sample inputs (e.g. noise) are chunked alongside.
    Returns a CPU ``Tensor[N, C', H, W]``."""
    device = next(model.parameters()).device
    out = []
    with freeze(model):
        for start in range(0, images.shape[0], batch_size):
            args = [t[start : start + batch_size].to(device) for t in (images, *extra)]
            out.append(model(*args).float().cpu())
    return torch.cat(out)


class _Loop(abc.ABC):
    """``train()`` on top of ``step``, ``total_steps``, ``done`` and ``train_step()``."""

    step: int
    total_steps: int
    done: bool

    @abc.abstractmethod
    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns its losses."""

    def train(self, steps: int | None = None, callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run ``steps`` more steps (default: until done); ``callback(step, losses)`` after each."""
        out = []
        remaining = self.total_steps - self.step if steps is None else steps
        for _ in range(max(0, remaining)):
            if self.done:
                break
            losses = self.train_step()
            out.append(losses)
            if callback is not None:
                callback(self.step, losses)
        return out


class _Trainer(_Loop):
    """State shared by the trainers: models, optimisers, random generators, step, history."""

    method = ""

    def __init__(self, *, seed: int, device: str | torch.device, divergence: DivergenceConfig | None, name: str):
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.name = name
        self.monitor = DivergenceMonitor(divergence, source=name)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.rngs: dict[str, torch.Generator] = {}
        self.pools: dict[str, ImagePool] = {}

    def _rng(self, *keys: object) -> torch.Generator:
        return make_generator(self.seed, self.method, *keys)

    @property
    @abc.abstractmethod
    def total_steps(self) -> int:
        """Steps of the whole schedule."""

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    @property
    def events(self) -> list[DivergenceEvent]:
        return self.monitor.events

    def _finish_step(self, losses: dict[str, float]) -> dict[str, float]:
        self.step += 1
        self.history.append({"step": self.step, **losses})
        return losses

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "name": self.name,
            "step": self.step,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rngs": {k: g.get_state() for k, g in self.rngs.items()},
            "pools": {k: p.state_dict() for k, p in self.pools.items()},
            "monitor": self.monitor.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.method:
            raise InputError(f"checkpoint is for method {state.get('method')!r}, not {self.method!r}", field="method")
        for k, m in self.models.items():
            m.load_state_dict(state["models"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, g in self.rngs.items():
            g.set_state(state["rngs"][k])
        for k, p in self.pools.items():
            p.load_state_dict(state["pools"][k], self.device)
        self.monitor.load_state_dict(state["monitor"])
        self.step = int(state["step"])
        self.history = list(state["history"])


# --------------------------------------------------------------------------------------------
# CycleGAN
# --------------------------------------------------------------------------------------------


class CycleGANTrainer(_Trainer):
    """CycleGAN between a synthetic domain S (source) and a real domain R (target).

    Models: ``g_s2r`` (G: S -> R, the refiner), ``g_r2s`` (F: R -> S), ``d_real`` (tells R from
    G(S)), ``d_syn`` (tells S from F(R)). One :meth:`train_step` is one iteration of the current
    phase: generator pre-training (L1 to the input), discriminator pre-training, then adversarial
    training (``g_updates_per_step`` generator updates, each on a fresh batch, then one
    discriminator update on the last batch's fakes through the history pools).

    Args:
        cfg: hyper-parameters.
        synthetic, real: the two domains (same channels and size; ``H`` and ``W`` multiples of
            ``2 ** cfg.generator.n_downsample``).
        seed: derives every random generator.
        device: where the networks run.
        divergence: divergence detection settings.
        label_aligned: pair same-class samples when both domains are labelled.
        name: prefix of divergence messages.
    """

    method = "cyclegan"

    def __init__(
        self,
        cfg: CycleGANConfig,
        synthetic: Domain,
        real: Domain,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        divergence: DivergenceConfig | None = None,
        label_aligned: bool = True,
        name: str = "cyclegan",
    ):
        super().__init__(seed=seed, device=device, divergence=divergence, name=name)
        check_compatible(synthetic, real)
        k = 2**cfg.generator.n_downsample
        h, w = synthetic.size
        if h % k or w % k:
            raise InputError(
                f"images are {w}x{h}; with generator.n_downsample={cfg.generator.n_downsample} both sides must be multiples of {k}",
                field="generator.n_downsample",
            )
        self.cfg = cfg
        self.synthetic = synthetic
        self.real = real
        c = synthetic.channels
        gc, dc = cfg.generator, cfg.discriminator

        def gen(key: str) -> ResnetGenerator:
            return ResnetGenerator(c, c, gc.base_channels, gc.n_downsample, gc.n_blocks, gc.norm, gc.init_std, generator=self._rng(key))

        def disc(key: str) -> PatchDiscriminator:
            return init_gan_weights(PatchDiscriminator(c, width=dc.width, init_std=dc.init_std), dc.init_std, self._rng(key))

        self.g_s2r = gen("g_s2r").to(self.device)
        self.g_r2s = gen("g_r2s").to(self.device)
        self.d_real = disc("d_real").to(self.device)
        self.d_syn = disc("d_syn").to(self.device)
        self.models = {"g_s2r": self.g_s2r, "g_r2s": self.g_r2s, "d_real": self.d_real, "d_syn": self.d_syn}
        self.opt_g = torch.optim.Adam(itertools.chain(self.g_s2r.parameters(), self.g_r2s.parameters()), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(itertools.chain(self.d_real.parameters(), self.d_syn.parameters()), lr=cfg.lr_d, betas=cfg.betas)
        self.optimizers = {"g": self.opt_g, "d": self.opt_d}
        self.sampler = PairSampler(synthetic, real, label_aligned=label_aligned, generator=self._rng("sampler"))
        self.noise_rng = self._rng("noise")
        self.rngs = {"sampler": self.sampler.generator, "noise": self.noise_rng}
        self.pool_real = ImagePool(cfg.pool_size)
        self.pool_syn = ImagePool(cfg.pool_size)
        self.pools = {"real": self.pool_real, "syn": self.pool_syn}

    @property
    def pretrain_steps(self) -> int:
        return self.cfg.pretrain_g_steps + self.cfg.pretrain_d_steps

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.cfg.steps

    @property
    def phase(self) -> str:
        """``"pretrain_g"``, ``"pretrain_d"``, ``"adversarial"`` or ``"done"``: what the next step does."""
        if self.step < self.cfg.pretrain_g_steps:
            return "pretrain_g"
        if self.step < self.pretrain_steps:
            return "pretrain_d"
        return "adversarial" if self.step < self.total_steps else "done"

    def lr_factor(self) -> float:
        """Learning-rate multiplier of the next adversarial step: 1, then linear to 0."""
        t = self.step - self.pretrain_steps
        n = self.cfg.steps
        start = int(round(self.cfg.decay_fraction * n))
        if t < start or n <= start:
            return 1.0
        return max(0.0, 1.0 - (t - start) / (n - start))

    def _set_lr(self, factor: float) -> None:
        for pg in self.opt_g.param_groups:
            pg["lr"] = self.cfg.lr_g * factor
        for pg in self.opt_d.param_groups:
            pg["lr"] = self.cfg.lr_d * factor

    def _sample(self) -> tuple[tuple[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]:
        s_idx, r_idx = self.sampler.sample(self.cfg.batch_size)
        xs, _, ms = self.synthetic.batch(s_idx, self.device)
        xr, _, mr = self.real.batch(r_idx, self.device)
        return (xs, ms), (xr, mr)

    def _uniform(self, n: int, rng: Pair | None, default: float) -> torch.Tensor:
        if rng is None:
            return torch.full((n,), default)
        lo, hi = rng
        return lo + (hi - lo) * torch.rand(n, generator=self.noise_rng)

    def _d_targets(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``Tensor[n, 1, 1, 1]`` for D on its own domain's images and on fakes, with MrGAN's
        label smoothing and flipping when configured."""
        cfg = self.cfg
        t_real = self._uniform(n, cfg.real_label_range, 1.0)
        t_fake = self._uniform(n, cfg.fake_label_range, 0.0)
        if cfg.label_flip_prob > 0:
            flip_real = torch.rand(n, generator=self.noise_rng) < cfg.label_flip_prob
            flip_fake = torch.rand(n, generator=self.noise_rng) < cfg.label_flip_prob
            t_real = torch.where(flip_real, self._uniform(n, cfg.fake_label_range, 0.0), t_real)
            t_fake = torch.where(flip_fake, self._uniform(n, cfg.real_label_range, 1.0), t_fake)
        return t_real.view(n, 1, 1, 1).to(self.device), t_fake.view(n, 1, 1, 1).to(self.device)

    def _d_terms(self, xs: torch.Tensor, xr: torch.Tensor, fake_r: torch.Tensor, fake_s: torch.Tensor) -> dict[str, torch.Tensor]:
        n = xs.shape[0]
        t_real, t_fake = self._d_targets(n)
        u_real, u_fake = self._d_targets(n)
        return {
            "d_real": 0.5 * (lsgan_loss(self.d_real(xr), t_real) + lsgan_loss(self.d_real(fake_r), t_fake)),
            "d_syn": 0.5 * (lsgan_loss(self.d_syn(xs), u_real) + lsgan_loss(self.d_syn(fake_s), u_fake)),
        }

    def _update(self, opt: torch.optim.Optimizer, total: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    def _step_pretrain_g(self) -> dict[str, float]:
        self._set_lr(1.0)
        (xs, _), (xr, _) = self._sample()
        terms = {"pretrain_l1_s2r": F.l1_loss(self.g_s2r(xs), xs), "pretrain_l1_r2s": F.l1_loss(self.g_r2s(xr), xr)}
        terms["g_total"] = terms["pretrain_l1_s2r"] + terms["pretrain_l1_r2s"]
        if self.monitor.check_losses(self.step, terms):
            self._update(self.opt_g, terms["g_total"])
        return _floats(terms)

    def _step_pretrain_d(self) -> dict[str, float]:
        self._set_lr(1.0)
        (xs, _), (xr, _) = self._sample()
        with torch.no_grad():
            fake_r, fake_s = self.g_s2r(xs), self.g_r2s(xr)
        terms = self._d_terms(xs, xr, fake_r, fake_s)
        terms["d_total"] = terms["d_real"] + terms["d_syn"]
        if self.monitor.check_losses(self.step, terms):
            self._update(self.opt_d, terms["d_total"])
        return _floats(terms)

    def _generator_terms(
        self, xs: torch.Tensor, ms: torch.Tensor | None, xr: torch.Tensor, mr: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        fake_r = self.g_s2r(xs)
        fake_s = self.g_r2s(xr)
        rec_s = self.g_r2s(fake_r)
        rec_r = self.g_s2r(fake_s)
        t: dict[str, torch.Tensor] = {
            "g_adv_s2r": lsgan_loss(self.d_real(fake_r), 1.0),
            "g_adv_r2s": lsgan_loss(self.d_syn(fake_s), 1.0),
            "cycle_syn": F.l1_loss(rec_s, xs),
            "cycle_real": F.l1_loss(rec_r, xr),
        }
        total = t["g_adv_s2r"] + t["g_adv_r2s"] + cfg.lambda_cycle * (t["cycle_syn"] + t["cycle_real"])
        if cfg.identity:
            t["identity_real"] = F.l1_loss(self.g_s2r(xr), xr)
            t["identity_syn"] = F.l1_loss(self.g_r2s(xs), xs)
            total = total + cfg.identity_ratio * cfg.lambda_cycle * (t["identity_real"] + t["identity_syn"])
        if cfg.lambda_l1 > 0:
            t["l1_syn"] = F.l1_loss(fake_r, xs)
            t["l1_real"] = F.l1_loss(fake_s, xr)
            total = total + cfg.lambda_l1 * (t["l1_syn"] + t["l1_real"])
        for side, x, m, rec in (("syn", xs, ms, rec_s), ("real", xr, mr, rec_r)):
            if m is None:
                continue
            t[f"bg_{side}"] = background_l1(rec, x, m)
            t[f"fg_{side}"] = foreground_hue_l1(rec, x, m)
            total = total + cfg.lambda_bg * t[f"bg_{side}"] + cfg.lambda_fg * t[f"fg_{side}"]
        t["g_total"] = total
        return t, fake_r, fake_s

    def _step_adversarial(self) -> dict[str, float]:
        cfg = self.cfg
        factor = self.lr_factor()
        self._set_lr(factor)
        logs: list[dict[str, float]] = []
        discs = (self.d_real, self.d_syn)
        std = float("nan")
        _requires_grad(discs, False)
        try:
            for i in range(cfg.g_updates_per_step):
                (xs, ms), (xr, mr) = self._sample()
                terms, fake_r, fake_s = self._generator_terms(xs, ms, xr, mr)
                if i == 0:  # once per step, so ``patience`` counts steps
                    std = self.monitor.check_outputs(self.step, fake_r)
                logs.append(_floats(terms))
                if not self.monitor.check_losses(self.step, terms):
                    return {**logs[-1], "batch_std": std}
                self._update(self.opt_g, terms["g_total"])
        finally:
            _requires_grad(discs, True)
        g_mean = {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}
        fr = self.pool_real.query(fake_r, self.noise_rng)
        fs = self.pool_syn.query(fake_s, self.noise_rng)
        d_terms = self._d_terms(xs, xr, fr, fs)
        d_terms["d_total"] = d_terms["d_real"] + d_terms["d_syn"]
        out = {**g_mean, **_floats(d_terms), "batch_std": std, "lr_factor": factor}
        if self.monitor.check_losses(self.step, d_terms):
            self._update(self.opt_d, d_terms["d_total"])
        return out

    def train_step(self) -> dict[str, float]:
        """One iteration of the current :attr:`phase`; returns its losses (``batch_std`` is the
        refined batch's per-batch std that the collapse detector checks)."""
        phase = self.phase
        if phase == "done":
            raise RuntimeError(f"{self.name}: training is finished ({self.total_steps} steps)")
        if phase == "pretrain_g":
            losses = self._step_pretrain_g()
        elif phase == "pretrain_d":
            losses = self._step_pretrain_d()
        else:
            losses = self._step_adversarial()
        return self._finish_step(losses)

    def refine(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Synthetic -> real: ``G(images)``, ``Tensor[N, C, H, W]`` in [0, 1] -> CPU ``Tensor[N, C, H, W]``."""
        return apply_model(self.g_s2r, images, batch_size=batch_size)

    def translate_real(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Real -> synthetic: ``F(images)``, ``Tensor[N, C, H, W]`` -> CPU ``Tensor[N, C, H, W]``."""
        return apply_model(self.g_r2s, images, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# MrGAN
# --------------------------------------------------------------------------------------------


class MrGANTrainer(_Loop):
    """MrGAN: two stacked CycleGANs (see the module docstring for the stage-2 modes).

    Stage 1 trains until done; then the whole synthetic and real sets are mapped through it
    (``RS = G1(S)``, ``RR = F1(R)``, labels and masks carried over) and stage 2 trains on the
    pair chosen by ``stage2_mode``. Losses are prefixed ``stage1/`` or ``stage2/``.

    After training, :meth:`refine` maps synthetic images into the space stage 2 targets, and
    :meth:`map_real` maps real images into that same space (identity for ``r_rs``, ``F1`` for
    the modes whose target is ``RR``), which is where a classifier trained on the refined
    images should be tested.
    """

    method = "mrgan"

    def __init__(
        self,
        cfg: MrGANConfig,
        synthetic: Domain,
        real: Domain,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        divergence: DivergenceConfig | None = None,
        label_aligned: bool = True,
        batch_size: int = 256,
    ):
        self.cfg = cfg
        self.seed = int(seed)
        self.synthetic = synthetic
        self.real = real
        self.device = resolve_device(device)
        self.divergence = divergence
        self.label_aligned = label_aligned
        self.batch_size = batch_size
        self.stage1 = CycleGANTrainer(
            cfg.stage1, synthetic, real, seed=derive_seed(seed, "mrgan", "stage1"), device=self.device,
            divergence=divergence, label_aligned=label_aligned, name="mrgan/stage1",
        )  # fmt: skip
        self.stage2: CycleGANTrainer | None = None

    @property
    def step(self) -> int:
        return self.stage1.step + (self.stage2.step if self.stage2 is not None else 0)

    @property
    def total_steps(self) -> int:
        return self.stage1.total_steps + self.cfg.stage2.pretrain_g_steps + self.cfg.stage2.pretrain_d_steps + self.cfg.stage2.steps

    @property
    def done(self) -> bool:
        return self.stage1.done and self.stage2 is not None and self.stage2.done

    @property
    def events(self) -> list[DivergenceEvent]:
        return self.stage1.events + (self.stage2.events if self.stage2 is not None else [])

    @property
    def history(self) -> list[dict[str, float]]:
        h1 = [{k if k == "step" else f"stage1/{k}": v for k, v in d.items()} for d in self.stage1.history]
        if self.stage2 is None:
            return h1
        n1 = self.stage1.step
        h2 = [{**{f"stage2/{k}": v for k, v in d.items() if k != "step"}, "step": d["step"] + n1} for d in self.stage2.history]
        return h1 + h2

    def stage2_domains(self) -> tuple[Domain, Domain]:
        """``(source, target)`` of stage 2, computed from the (trained) stage-1 generators."""
        s1, syn, real = self.stage1, self.synthetic, self.real
        mode = self.cfg.stage2_mode
        source, target = syn, real
        if mode in ("rr_rs", "r_rs"):
            rs_images = s1.refine(syn.images, self.batch_size).clamp_(0, 1)
            source = Domain(rs_images, syn.labels, syn.masks, name="refined synthetic (RS)")
        if mode in ("rr_rs", "rr_s"):
            rr_images = s1.translate_real(real.images, self.batch_size).clamp_(0, 1)
            target = Domain(rr_images, real.labels, real.masks, name="refined real (RR)")
        return source, target

    def _build_stage2(self) -> CycleGANTrainer:
        source, target = self.stage2_domains()
        self.stage2 = CycleGANTrainer(
            self.cfg.stage2, source, target, seed=derive_seed(self.seed, "mrgan", "stage2"), device=self.device,
            divergence=self.divergence, label_aligned=self.label_aligned, name=f"mrgan/stage2[{self.cfg.stage2_mode}]",
        )  # fmt: skip
        return self.stage2

    def train_step(self) -> dict[str, float]:
        if not self.stage1.done:
            return {f"stage1/{k}": v for k, v in self.stage1.train_step().items()}
        stage2 = self.stage2 if self.stage2 is not None else self._build_stage2()
        return {f"stage2/{k}": v for k, v in stage2.train_step().items()}

    def _need_stage2(self) -> CycleGANTrainer:
        if self.stage2 is None:
            raise RuntimeError("MrGAN stage 2 has not started yet (train stage 1 to the end first)")
        return self.stage2

    def refine(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Synthetic images -> the stage-2 target space: ``G2(G1(x))`` (``rr_rs``, ``r_rs``) or ``G2(x)`` (``rr_s``).
        ``Tensor[N, C, H, W]`` -> CPU ``Tensor[N, C, H, W]``."""
        bs = batch_size or self.batch_size
        stage2 = self._need_stage2()
        x = images if self.cfg.stage2_mode == "rr_s" else self.stage1.refine(images, bs).clamp_(0, 1)
        return stage2.refine(x, bs)

    def map_real(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Real images -> the space refined images live in: ``F1(x)`` (``rr_rs``, ``rr_s``) or ``x`` (``r_rs``)."""
        if self.cfg.stage2_mode == "r_rs":
            return images.detach().float().cpu().clone()
        return self.stage1.translate_real(images, batch_size or self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "stage1": self.stage1.state_dict(),
            "stage2": self.stage2.state_dict() if self.stage2 is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.method:
            raise InputError(f"checkpoint is for method {state.get('method')!r}, not {self.method!r}", field="method")
        self.stage1.load_state_dict(state["stage1"])
        self.stage2 = None
        if state["stage2"] is not None:
            self._build_stage2().load_state_dict(state["stage2"])


# --------------------------------------------------------------------------------------------
# PixelDA
# --------------------------------------------------------------------------------------------


class PixelDATrainer(_Trainer):
    """PixelDA: refiner ``G(x, z)``, discriminator ``D`` and task classifier ``T``.

    Each step: draw a source batch ``(x_s, y_s, m_s)``, a target batch ``x_t`` and ``z ~ U(-1, 1)``;
    update D and T on ``alpha * L_d + beta * L_t`` with G fixed (``L_d`` = BCE real/fake,
    ``L_t`` = cross-entropy of T on ``G(x_s, z)`` and, with ``task_on_source``, on ``x_s``); then
    update G on ``alpha * L_g + beta * CE(T(G(x_s, z)), y_s) + gamma * masked_pmse`` with D and
    T fixed. Without masks the content loss covers the whole image.

    Args:
        cfg: hyper-parameters.
        synthetic: labelled source domain.
        real: target domain (labels optional; only used for pairing).
        num_classes: classes of T (default: largest source label + 1).
        seed, device, divergence, label_aligned: as for :class:`CycleGANTrainer`.

    Raises:
        InputError: the synthetic domain has no labels (T needs them).
    """

    method = "pixelda"

    def __init__(
        self,
        cfg: PixelDAConfig,
        synthetic: Domain,
        real: Domain,
        *,
        num_classes: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        divergence: DivergenceConfig | None = None,
        label_aligned: bool = True,
        name: str = "pixelda",
    ):
        super().__init__(seed=seed, device=device, divergence=divergence, name=name)
        check_compatible(synthetic, real)
        if synthetic.labels is None:
            raise InputError(
                f"PixelDA trains a task classifier on the synthetic labels, but {synthetic.name} has none "
                "(put the images in one subfolder per class)",
                field="synthetic.labels",
            )
        k = int(synthetic.labels.max()) + 1
        if num_classes is not None and num_classes < k:
            raise InputError(f"num_classes={num_classes} but the synthetic labels go up to {k - 1}", field="num_classes")
        self.num_classes = max(num_classes or k, 2)
        self.cfg = cfg
        self.synthetic = synthetic
        self.real = real
        c = synthetic.channels
        gc, dc, cc = cfg.generator, cfg.discriminator, cfg.classifier
        self.g = PixelDAGenerator(
            c, c, synthetic.size, gc.noise_dim, gc.base_channels, gc.n_blocks, gc.norm, gc.init_std, generator=self._rng("g")
        ).to(self.device)
        self.d = init_gan_weights(PatchDiscriminator(c, width=dc.width, init_std=dc.init_std), dc.init_std, self._rng("d")).to(self.device)
        self.t = SmallResNet(self.num_classes, c, cc.widths, cc.blocks_per_stage, generator=self._rng("t")).to(self.device)
        guard_strided_1x1_convs(self.t)
        self.models = {"g": self.g, "d": self.d, "t": self.t}
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_t = torch.optim.Adam(self.t.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.optimizers = {"g": self.opt_g, "d": self.opt_d, "t": self.opt_t}
        self.sampler = PairSampler(synthetic, real, label_aligned=label_aligned, generator=self._rng("sampler"))
        self.noise_rng = self._rng("noise")
        self.rngs = {"sampler": self.sampler.generator, "noise": self.noise_rng}

    @property
    def total_steps(self) -> int:
        return self.cfg.steps

    def lr(self) -> float:
        """Learning rate of the next step: ``lr * decay_rate ** (step // decay_steps)``."""
        return self.cfg.lr * self.cfg.lr_decay_rate ** (self.step // self.cfg.lr_decay_steps)

    def train_step(self) -> dict[str, float]:
        """One D/T update then one G update; returns the losses (``batch_std``: the refined batch's
        per-batch std; ``t_acc_refined``: T's accuracy on the refined batch)."""
        if self.done:
            raise RuntimeError(f"{self.name}: training is finished ({self.total_steps} steps)")
        cfg = self.cfg
        lr = self.lr()
        for opt in self.optimizers.values():
            for pg in opt.param_groups:
                pg["lr"] = lr
        s_idx, t_idx = self.sampler.sample(cfg.batch_size)
        xs, ys, ms = self.synthetic.batch(s_idx, self.device)
        xt, _, _ = self.real.batch(t_idx, self.device)
        assert ys is not None
        z = self.g.sample_noise(xs.shape[0], self.noise_rng, self.device)

        # D and T, with G fixed
        with torch.no_grad():
            fake = self.g(xs, z)
        std = self.monitor.check_outputs(self.step, fake)
        logits_fake = self.t(fake)
        dt = {"d_loss": d_loss(self.d(xt), self.d(fake)), "t_loss": F.cross_entropy(logits_fake, ys)}
        if cfg.task_on_source:
            dt["t_loss"] = dt["t_loss"] + F.cross_entropy(self.t(xs), ys)
        dt["dt_total"] = cfg.alpha * dt["d_loss"] + cfg.beta * dt["t_loss"]
        out = {**_floats(dt), "batch_std": std, "lr": lr, "t_acc_refined": float((logits_fake.argmax(1) == ys).float().mean())}
        if not self.monitor.check_losses(self.step, dt):
            return self._finish_step(out)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_t.zero_grad(set_to_none=True)
        dt["dt_total"].backward()
        self.opt_d.step()
        self.opt_t.step()

        # G, with D and T fixed
        _requires_grad((self.d, self.t), False)
        try:
            fake = self.g(xs, z)
            gt = {
                "g_adv": g_loss(self.d(fake)),
                "g_task": F.cross_entropy(self.t(fake), ys),
                "g_content": masked_pmse(fake, xs, ms),
            }
            gt["g_total"] = cfg.alpha * gt["g_adv"] + cfg.beta * gt["g_task"] + cfg.gamma * gt["g_content"]
            out.update(_floats(gt))
            if self.monitor.check_losses(self.step, gt):
                self.opt_g.zero_grad(set_to_none=True)
                gt["g_total"].backward()
                self.opt_g.step()
        finally:
            _requires_grad((self.d, self.t), True)
        return self._finish_step(out)

    def refine(
        self,
        images: torch.Tensor,
        noise: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """``G(images, noise)``: ``Tensor[N, C, H, W]`` -> CPU ``Tensor[N, C, H, W]``.

        ``noise`` ``Tensor[N, noise_dim]``; when ``None`` it is drawn from ``generator``, or from a
        generator derived from the trainer's seed (so repeated calls give the same output). To
        keep the noise, draw it yourself with ``trainer.g.sample_noise(N, generator)``.
        """
        if noise is None:
            g = generator if generator is not None else self._rng("refine")
            noise = self.g.sample_noise(images.shape[0], g, "cpu")
        return apply_model(self.g, images, noise, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# helpers: reference classifier, checkpoints
# --------------------------------------------------------------------------------------------


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
    """Train ``model`` (on its device) with Adam and cross-entropy on random batches of ``images``
    ``Tensor[N, C, H, W]`` / ``labels`` ``Tensor[N]`` drawn from ``generator``. Returns the losses."""
    device = next(model.parameters()).device
    guard_strided_1x1_convs(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(images.shape[0], (batch_size,), generator=generator)
        x, y = images[idx].to(device), labels[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


Trainer = CycleGANTrainer | MrGANTrainer | PixelDATrainer


def save_refiner_checkpoint(path: str | Path, trainer: Trainer, config: Mapping[str, Any] | None = None) -> None:
    """Write ``trainer``'s full state (and the run's config) to ``path`` atomically."""
    save_checkpoint(path, {"kind": "refiner", "config": dict(config) if config is not None else None, "trainer": trainer.state_dict()})


def read_refiner_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_refiner_checkpoint` (tensors on the CPU).

    Raises:
        InputError: missing or unreadable file, or a checkpoint of another kind.
    """
    payload = load_checkpoint(path)
    if payload.get("kind") != "refiner" or "trainer" not in payload:
        raise InputError("not a synthloop refinement checkpoint", file=Path(path))
    return payload


def load_refiner_checkpoint(path: str | Path, trainer: Trainer) -> dict[str, Any]:
    """Restore ``trainer`` from ``path``; returns the checkpoint's config (or ``None``)."""
    payload = read_refiner_checkpoint(path)
    try:
        trainer.load_state_dict(payload["trainer"])
    except InputError as e:
        raise InputError(e.message, file=path, field=e.field) from None
    except (KeyError, RuntimeError, ValueError) as e:
        raise InputError(f"checkpoint does not match this run's models ({type(e).__name__}: {e})", file=path) from None
    return payload["config"]


# --------------------------------------------------------------------------------------------
# the whole job
# --------------------------------------------------------------------------------------------


class RefineDataConfig(Config):
    """Input folders (one subfolder per class, or images directly inside for unlabelled data)."""

    synthetic: Path
    real: Path
    synthetic_masks: Path | None = None
    real_masks: Path | None = None
    channels: Literal[1, 3] | None = None
    label_aligned: bool = True


class EvaluationConfig(Config):
    """Label preservation (needs labels on both sides) and foreground IoU after training.

    The reference classifier is a :class:`~synthloop.models.refiners.SmallResNet` trained on the
    real images (for MrGAN, on the real images mapped into the refined space) with Adam.
    """

    enabled: bool = True
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    classifier_steps: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    iou_threshold: float = 0.5
    refined_iou_threshold: float | None = None


class RefineConfig(Config):
    """Everything ``synthloop refine`` needs. Only the section named by ``method`` is used."""

    method: Literal["cyclegan", "mrgan", "pixelda"] = "cyclegan"
    seed: int = 0
    device: str = "auto"
    data: RefineDataConfig
    cyclegan: CycleGANConfig = Field(default_factory=CycleGANConfig)
    mrgan: MrGANConfig = Field(default_factory=MrGANConfig)
    pixelda: PixelDAConfig = Field(default_factory=PixelDAConfig)
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(100, ge=1)
    refine_batch_size: int = Field(256, ge=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)


# keys that may change between a run and its resumption (they do not affect training)
RESUMABLE_KEYS: tuple[str, ...] = ("device", "checkpoint_every", "log_every", "refine_batch_size", "evaluation")


def build_trainer(cfg: RefineConfig, synthetic: Domain, real: Domain, *, num_classes: int | None = None) -> Trainer:
    """The trainer ``cfg.method`` names, for these domains."""
    common = dict(seed=cfg.seed, device=cfg.device, divergence=cfg.divergence, label_aligned=cfg.data.label_aligned)
    if cfg.method == "cyclegan":
        return CycleGANTrainer(cfg.cyclegan, synthetic, real, **common)  # type: ignore[arg-type]
    if cfg.method == "mrgan":
        return MrGANTrainer(cfg.mrgan, synthetic, real, batch_size=cfg.refine_batch_size, **common)  # type: ignore[arg-type]
    return PixelDATrainer(cfg.pixelda, synthetic, real, num_classes=num_classes, **common)  # type: ignore[arg-type]


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _training_view(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in RESUMABLE_KEYS}


def _write_logs(out: Path, trainer: Trainer) -> None:
    atomic_write_json(out / "losses.json", trainer.history)
    atomic_write_json(out / "events.json", [e.to_dict() for e in trainer.events])


def _evaluate(cfg: RefineConfig, trainer: Trainer, synthetic: ImageFolder, real: ImageFolder, refined: torch.Tensor) -> dict[str, Any]:
    ev = cfg.evaluation
    ious = foreground_iou(
        synthetic.images, refined, threshold=ev.iou_threshold, refined_threshold=ev.refined_iou_threshold, input_masks=synthetic.masks
    )
    metrics: dict[str, Any] = {
        "foreground_iou": float(ious.mean()),
        "foreground_iou_threshold": ev.iou_threshold,
        "foreground_iou_from_masks": synthetic.masks is not None,
    }
    if synthetic.labels is None or real.labels is None or len(real.classes) < 2:
        metrics["label_preservation"] = None
        metrics["label_preservation_skipped"] = "needs labelled real and synthetic folders with at least two classes"
        return metrics
    num_classes = len(real.classes)
    reference_images = trainer.map_real(real.images) if isinstance(trainer, MrGANTrainer) else real.images
    device = resolve_device(cfg.device)
    init = make_generator(cfg.seed, "evaluation", "init")
    clf = SmallResNet(num_classes, real.channels, ev.classifier.widths, ev.classifier.blocks_per_stage, generator=init).to(device)
    batches = make_generator(cfg.seed, "evaluation", "batches")
    train_classifier(clf, reference_images, real.labels, steps=ev.classifier_steps, batch_size=ev.batch_size, lr=ev.lr, generator=batches)
    per_class = label_preservation_per_class(clf, refined, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation"] = label_preservation(clf, refined, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation_unrefined"] = label_preservation(clf, synthetic.images, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation_per_class"] = {c: (None if math.isnan(v) else v) for c, v in zip(real.classes, per_class.tolist())}
    metrics["reference_classifier_train_accuracy"] = accuracy(clf, reference_images, real.labels, num_classes=num_classes)
    metrics["reference_classifier_steps"] = ev.classifier_steps
    if isinstance(trainer, PixelDATrainer):
        metrics["pixelda_task_accuracy_real"] = accuracy(trainer.t, real.images, real.labels, num_classes=trainer.num_classes)
    return metrics


def run_refine(cfg: RefineConfig, out_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the configured refiner and write its results to ``out_dir``.

    Output: ``config.yaml``; ``checkpoint.pt`` (every ``checkpoint_every`` steps and at the end);
    ``losses.json`` (one dict per step) and ``events.json`` (divergence events), rewritten with
    each checkpoint; then ``refined/`` (every synthetic image refined, same relative paths,
    PNG), for MrGAN modes with a refined-real target also ``real_mapped/``; and ``metrics.json``.
    Every file is written atomically.

    Args:
        cfg: the run.
        out_dir: output folder; it must not hold a checkpoint unless ``resume``.
        resume: continue from ``out_dir/checkpoint.pt`` (the training part of the config must
            match the one it was written with).
        log: receives progress lines.

    Returns:
        the metrics written to ``metrics.json``.

    Raises:
        InputError: bad folders or config, a checkpoint that exists without ``resume`` (or is
            missing with it), or a config that differs from the checkpoint's.
        DivergenceError: training diverged and ``divergence.action`` is ``"raise"`` (the last
            checkpoint and ``events.json`` are kept).
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise InputError("output folder already holds a checkpoint; pass --resume to continue it, or choose another folder", file=out)
    if resume and not ckpt.exists():
        raise InputError("nothing to resume: no checkpoint.pt in the output folder", file=out)

    d = cfg.data
    synthetic = read_image_folder(d.synthetic, channels=d.channels, masks=d.synthetic_masks, what="synthetic")
    real = read_image_folder(d.real, channels=d.channels, masks=d.real_masks, what="real")
    check_same_classes(real, synthetic)
    syn_domain = Domain.from_folder(synthetic, name=f"synthetic folder {d.synthetic}")
    real_domain = Domain.from_folder(real, name=f"real folder {d.real}")
    trainer = build_trainer(cfg, syn_domain, real_domain, num_classes=len(synthetic.classes) or None)
    cfg_dict = cfg.to_dict()

    if resume:
        saved = load_refiner_checkpoint(ckpt, trainer)
        if saved is not None:
            diff = _diff_keys(_training_view(saved), _training_view(cfg_dict))
            if diff:
                raise InputError(
                    f"the config differs from the one the checkpoint was trained with in: {', '.join(diff)}; "
                    "resume with the same config (only " + ", ".join(RESUMABLE_KEYS) + " may change)",
                    file=ckpt,
                )
        say(f"resumed {cfg.method} at step {trainer.step}/{trainer.total_steps}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfg.to_yaml())
        say(f"training {cfg.method}: {len(synthetic)} synthetic, {len(real)} real images, {trainer.total_steps} steps")

    try:
        while not trainer.done:
            losses = trainer.train_step()
            step = trainer.step
            if step % cfg.log_every == 0 or trainer.done:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items() if "total" in k or k.endswith("batch_std"))
                say(f"step {step}/{trainer.total_steps}: {shown}")
            if step % cfg.checkpoint_every == 0 or trainer.done:
                save_refiner_checkpoint(ckpt, trainer, cfg_dict)
                _write_logs(out, trainer)
    except DivergenceError:
        _write_logs(out, trainer)
        raise

    _write_logs(out, trainer)
    refined = trainer.refine(synthetic.images, batch_size=cfg.refine_batch_size).clamp_(0, 1)
    write_image_folder(out / "refined", refined, synthetic.files)
    if isinstance(trainer, MrGANTrainer) and cfg.mrgan.stage2_mode != "r_rs":
        write_image_folder(out / "real_mapped", trainer.map_real(real.images).clamp_(0, 1), real.files)
    metrics: dict[str, Any] = {"method": cfg.method, "steps": trainer.step, "num_synthetic": len(synthetic), "num_real": len(real)}
    metrics["divergence_events"] = len(trainer.events)
    if cfg.evaluation.enabled:
        metrics.update(_evaluate(cfg, trainer, synthetic, real, refined))
    atomic_write_json(out / "metrics.json", metrics)
    say(f"wrote {len(synthetic)} refined images to {out / 'refined'}")
    return metrics
