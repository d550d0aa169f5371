"""The TERSE loop for image classification (TERSE section 3, supplementary A.1).

Three players: the synthesizer S predicts an affine placement for each source digit, the digit
is pasted onto a black canvas with the differentiable spatial transformer
(:func:`synthloop.compose.batch.paste_batch`), and the target classifier T (and, optionally, a
discriminator D) judge the composite.

One *cycle*:

1. **Synthesizer phase.** S is trained (Adam) to *maximise* T's cross-entropy, and to fool D
   when D is on, with T and D frozen (:func:`synthloop.models.freeze`: no ``requires_grad``,
   ``eval()`` mode, never in S's optimiser). Every composite of every S batch that frozen T finds
   hard (``max_{c != y} p_c - p_y > margin``) is offered to a class-balanced
   :class:`~synthloop.loops.cache.HardExampleCache`; the phase ends when the cache holds
   ``hard_per_class`` samples of every class (or after ``s_max_steps`` batches). When D is on,
   each S step is followed by a D step on real digits vs. the (detached) composites.
2. **Target phase.** The cache is added to the training set (the real digits plus every cache so
   far) and T is trained for ``t_epochs`` epochs (SGD) with S frozen (S is not used).

The ``"random"`` source replaces S by the AffNIST recipe (:mod:`synthloop.data.affnist`): each
cycle draws ``hard_per_class`` random digits of each class under random recipe transforms, with
no hardness filter. With everything else identical, it is the baseline curve of TERSE Fig. 7.

Guards against degenerate solutions: S's outputs are squashed into :class:`RangesConfig` (by
default the AffNIST recipe's ranges), and with ``fit_translation`` S's translation is a position
*inside each digit's feasible interval* (the offsets that keep the whole digit on the canvas,
:func:`synthloop.data.affnist.translation_bounds`), as the recipe does, so S cannot push a
digit off the canvas; an optional reference classifier trained on clean data reports, each
cycle, the fraction of cached samples whose label it no longer recognises.

Randomness: the sample order and S's noise come from ``torch.Generator`` objects derived from
``(seed, phase, cycle)``; dropout draws from the global generator, which each phase seeds inside
:func:`~synthloop.loops.training.scoped_rng` (restored afterwards). A run resumed from the
checkpoint written after any cycle therefore continues exactly as the uninterrupted run.

Run folder (``run_dir``): ``config.yaml`` (resolved), ``history.json``, ``checkpoint.pt`` (after
every cycle), ``cycles/cycle_001/samples.npz`` and so on (the cache as a data set: float32 images, labels,
affine parameters, source digit index, hardness), and when all cycles are done
``target.pt2`` + ``target.json`` (the exported target, loadable without synthloop).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from synthloop.config import Config, check_range
from synthloop.data.affnist import AFFNIST_RANGES, sample_affnist_params, translation_bounds
from synthloop.errors import InputError
from synthloop.functional.losses import d_loss, g_loss
from synthloop.loops.cache import HardExampleCache, render_digits
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.export import export_classifier
from synthloop.loops.faults import NonFiniteError, check_step, record_event
from synthloop.loops.training import fit_classifier, scoped_rng, sgd
from synthloop.metrics.classification import check_dataset, check_labels, model_device, unrecognised_fraction
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.discriminator import PatchDiscriminator
from synthloop.models.synthesizer import MNISTSynthesizer, ParamRanges
from synthloop.models.targets import ClassifierTarget, freeze, hardness_from_probs, is_hard_from_probs
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.progress import Progress
from synthloop.utils.records import check_same_config
from synthloop.utils.seeding import derive_seed, make_generator

Range = tuple[float, float]


class RangesConfig(Config):
    """``(min, max)`` of each affine parameter S may output; defaults: the AffNIST recipe's ranges
    (TERSE A.1: "we clamp these parameters to the same range used to generate AffNIST")."""

    angle: Range = AFFNIST_RANGES["angle"]
    tx: Range = AFFNIST_RANGES["tx"]
    ty: Range = AFFNIST_RANGES["ty"]
    shear: Range = AFFNIST_RANGES["shear"]
    sx: Range = AFFNIST_RANGES["sx"]
    sy: Range = AFFNIST_RANGES["sy"]

    @field_validator("angle", "tx", "ty", "shear", "sx", "sy")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        return check_range(value)

    def to_param_ranges(self) -> ParamRanges:
        return ParamRanges(**{k: tuple(v) for k, v in self.model_dump().items()})


class TerseClassificationConfig(Config):
    """Every knob of the loop; defaults are the paper's values (TERSE A.1 / section 3.4) unless noted."""

    seed: int = 0
    num_classes: int = Field(10, ge=2)
    cycles: int = Field(10, ge=1, description="K cycles of (S phase, T phase); the paper does not state K")
    source: Literal["terse", "random"] = "terse"
    # synthesizer phase
    hard_per_class: int = Field(500, ge=1, description="paper: 500 hard examples per class")
    hard_margin: float = Field(0.05, ge=0.0, description="hard when max_{c!=y} p_c - p_y > margin; paper 0.05")
    s_batch_size: int = Field(1024, ge=2, description="paper: 1024")
    lr_s: float = Field(1e-3, gt=0.0, description="Adam, paper 1e-3")
    s_weight_decay: float = Field(5e-4, ge=0.0, description="paper section 3.4: 5e-4")
    s_max_steps: int = Field(200, ge=1, description="S batches per cycle at most (not in the paper: a budget guard)")
    s_min_steps: int = Field(1, ge=1, description="S batches per cycle at least, even once the cache is full (paper: 1)")
    cache_policy: Literal["first", "latest"] = Field("first", description="which hard examples a full class keeps (paper: first)")
    s_noise_dim: int = Field(0, ge=0, description="explicit noise input to S; paper: 0 (dropout only)")
    ranges: RangesConfig = RangesConfig()
    fit_translation: bool = True
    # target phase
    t_epochs: int = Field(30, ge=0, description="paper: 30 epochs per cycle")
    t_batch_size: int = Field(64, ge=2, description="paper: 64")
    lr_t: float = Field(1e-2, gt=0.0, description="SGD, paper 1e-2")
    t_momentum: float = Field(0.5, ge=0.0, description="paper A.1: 0.5 (section 3.4 says 0.9)")
    t_weight_decay: float = Field(0.0, ge=0.0, description="A.1 lists none (section 3.4 says 5e-4)")
    lr_t_drop_cycle: int | None = Field(None, ge=1, description="from this cycle on use lr_t_drop_to (Table 1: after 100)")
    lr_t_drop_to: float = Field(1e-3, gt=0.0)
    t_real_per_epoch: int | None = Field(None, ge=1, description="real samples drawn into each T epoch; None = all (paper)")
    accumulate: bool = Field(True, description="train T on every cache so far (True) or only the latest")
    # discriminator (off for AffNIST in the paper)
    discriminator: bool = False
    lr_d: float = Field(1e-4, gt=0.0, description="Adam, paper A.2: 1e-4")
    d_width: float = Field(0.25, gt=0.0, description="PatchDiscriminator width multiplier (paper: 1.0)")
    adv_weight: float = Field(1.0, ge=0.0)
    eval_batch_size: int = Field(2048, ge=1)


@dataclass
class SynthBatch:
    """One S batch: composites ``images`` ``(B, 1, H, W)``, ``labels`` ``(B,)``, ``params``
    ``(B, 6)``, source ``index`` ``(B,)``, ``hardness`` ``(B,)`` and ``hard`` ``(B,)`` bool
    (both from the frozen target)."""

    images: torch.Tensor
    labels: torch.Tensor
    params: torch.Tensor
    index: torch.Tensor
    hardness: torch.Tensor
    hard: torch.Tensor


@dataclass
class TerseRunResult:
    """What :meth:`TerseClassificationLoop.run` leaves behind."""

    history: list[dict[str, Any]]
    caches: list[HardExampleCache]
    completed_cycles: int
    finished: bool
    run_dir: Path | None = None
    exported: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)


def fit_translation(digits: torch.Tensor, params: torch.Tensor, tx_range: Range, ty_range: Range, canvas: tuple[int, int]) -> torch.Tensor:
    """Re-read ``tx``/``ty`` of ``params`` ``Tensor[B, 6]`` as positions inside each digit's feasible
    interval: a value at fraction ``u`` of ``[lo, hi]`` becomes the point at fraction ``u`` of
    ``translation_bounds(digit) ∩ [lo, hi]`` (the AffNIST recipe's rule). Differentiable; a digit
    too large for the canvas is centred in its empty interval. Returns ``Tensor[B, 6]``."""
    if canvas[0] != canvas[1]:
        raise ValueError(f"fit_translation needs a square canvas, got {canvas}")
    bounds = translation_bounds(digits, params, size=canvas[0])
    cols = []
    for k, (col, (lo, hi)) in enumerate(((1, tx_range), (2, ty_range))):
        if hi <= lo:
            cols.append(params[:, col])
            continue
        u = (params[:, col] - lo) / (hi - lo)
        blo = bounds[:, 2 * k].clamp(lo, hi)
        bhi = bounds[:, 2 * k + 1].clamp(lo, hi)
        mid = (blo + bhi) / 2
        empty = blo > bhi
        blo, bhi = torch.where(empty, mid, blo), torch.where(empty, mid, bhi)
        cols.append(blo + (bhi - blo) * u)
    return torch.cat([params[:, :1], cols[0].unsqueeze(1), cols[1].unsqueeze(1), params[:, 3:]], 1)


def _mean(rows: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return float(sum(vals) / len(vals)) if vals else None


class TerseClassificationLoop:
    """The alternating S / T (/ D) loop of TERSE A.1 on a set of source digits.

    Args:
        config: the loop's hyper-parameters.
        target: T, ``Tensor[B, 1, H, W] -> logits Tensor[B, num_classes]`` (e.g. a pre-trained
            :class:`~synthloop.models.MNISTClassifier`); trained in place.
        images: ``Tensor[N, 1, H, W]`` source digits in [0, 1] (padded MNIST, square canvas):
            S's inputs and T's real training data.
        labels: ``Tensor[N]`` classes; every class must occur.
        synthesizer: S (default: :class:`~synthloop.models.MNISTSynthesizer` with ``config.ranges``).
        discriminator: D when ``config.discriminator`` (default: a :class:`PatchDiscriminator`).
        reference: optional classifier trained on clean data for the degenerate-sample check.
        device: where everything runs (models and data are moved there).
        run_dir: folder for the config, checkpoints, caches, history and exported model; ``None``
            keeps everything in memory (no checkpoint, no resume).

    Raises:
        InputError: empty or malformed data, a class with no digits, or a target whose output
            width is not ``config.num_classes``.
    """

    def __init__(
        self,
        config: TerseClassificationConfig,
        target: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        synthesizer: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        reference: nn.Module | None = None,
        device: torch.device | str = "cpu",
        run_dir: str | Path | None = None,
    ):
        self.config = cfg = config
        self.device = torch.device(device)
        check_dataset(images, labels, name="images")
        labels = check_labels(labels, cfg.num_classes)
        if images.shape[1] != 1 or images.shape[-1] != images.shape[-2]:
            raise InputError(f"source digits must be (N, 1, S, S), got {tuple(images.shape)}", field="images")
        present = torch.bincount(labels.cpu(), minlength=cfg.num_classes)
        if bool((present == 0).any()):
            missing = (present == 0).nonzero().flatten().tolist()
            raise InputError(f"no source digits of class {missing}: the cache could never fill", field="labels")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.canvas = (int(images.shape[-2]), int(images.shape[-1]))
        self.class_counts = present
        self.target = target.to(self.device)
        guard_strided_1x1_convs(self.target)
        self.target_adapter = ClassifierTarget(self.target, cfg.num_classes, name="target")
        with freeze(self.target):  # eval mode, so the check draws nothing from the dropout RNG
            self.target_adapter.check_output(self.images[:2])
        if reference is not None:
            with freeze(reference):
                ClassifierTarget(reference, cfg.num_classes, name="reference").check_output(self.images[:2].to(model_device(reference)))
        self.reference = reference
        with scoped_rng(derive_seed(cfg.seed, "init"), self.device):
            if synthesizer is None:
                synthesizer = MNISTSynthesizer(ranges=cfg.ranges.to_param_ranges(), noise_dim=cfg.s_noise_dim, input_size=self.canvas)
            if cfg.discriminator and discriminator is None:
                discriminator = PatchDiscriminator(in_channels=1, width=cfg.d_width)
        self.synthesizer = synthesizer.to(self.device)
        self.discriminator = discriminator.to(self.device) if (cfg.discriminator and discriminator is not None) else None
        self.opt_s = torch.optim.Adam(self.synthesizer.parameters(), lr=cfg.lr_s, weight_decay=cfg.s_weight_decay)
        self.opt_t = sgd(self.target, cfg.lr_t, cfg.t_momentum, cfg.t_weight_decay)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999)) if self.discriminator is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.caches: list[HardExampleCache] = []
        self.history: list[dict[str, Any]] = []
        self.completed_cycles = 0

    # ------------------------------------------------------------------ single steps

    def _freeze_judges(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(freeze(self.target))
        if self.discriminator is not None:
            stack.enter_context(freeze(self.discriminator))
        return stack

    def synthesize(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run S on the source digits at ``index`` ``Tensor[B]`` -> ``(images Tensor[B, 1, H, W],
        params Tensor[B, 6])``, differentiable w.r.t. S (in whatever mode S is in)."""
        fg = self.images[index]
        out = self.synthesizer(fg, generator=generator) if self.config.s_noise_dim > 0 else self.synthesizer(fg)
        params = out["params"]
        if self.config.fit_translation:
            params = fit_translation(fg, params, self.config.ranges.tx, self.config.ranges.ty, self.canvas)
        return render_digits(fg, params), params

    def synthesizer_update(self, index: torch.Tensor, generator: torch.Generator | None = None, *, step: int = 0) -> tuple[dict[str, float], SynthBatch]:
        """One S step on the digits at ``index``: maximise T's loss (and fool D), T and D frozen.
        A NaN/inf loss or gradient raises :class:`~synthloop.loops.faults.NonFiniteError` naming ``step``.

        Returns the losses (``loss_s`` minimised by S, ``loss_t`` T's cross-entropy on the batch,
        ``loss_adv`` with D, ``hard_frac``) and the batch's composites with T's verdicts.
        """
        cfg = self.config
        labels = self.labels[index]
        self.synthesizer.train()
        with self._freeze_judges():
            images, params = self.synthesize(index, generator)
            logits = self.target_adapter.logits(images)
            loss_t = F.cross_entropy(logits, labels)
            loss = -loss_t
            losses: dict[str, float] = {}
            if self.discriminator is not None:
                adv = g_loss(self.discriminator(images))
                loss = loss + cfg.adv_weight * adv
                losses["loss_adv"] = float(adv.detach())
            self.opt_s.zero_grad(set_to_none=True)
            check_step(loss, self.synthesizer, step=step, what="synthesizer")
            self.opt_s.step()
        probs = logits.detach().softmax(1)
        hard = is_hard_from_probs(probs, labels, cfg.hard_margin)
        losses.update(loss_s=float(loss.detach()), loss_t=float(loss_t.detach()), hard_frac=float(hard.float().mean()))
        batch = SynthBatch(images.detach(), labels, params.detach(), index, hardness_from_probs(probs, labels), hard)
        return losses, batch

    def synthesizer_step(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """:meth:`synthesizer_update` returning only the losses."""
        return self.synthesizer_update(index, generator)[0]

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, *, step: int = 0) -> dict[str, float]:
        """One D step on real digits ``Tensor[B, 1, H, W]`` vs. composites ``Tensor[B', 1, H, W]``
        (detached: S is frozen, i.e. not involved)."""
        if self.discriminator is None or self.opt_d is None:
            raise InputError("the discriminator is off (set discriminator: true)", field="discriminator")
        self.discriminator.train()
        loss = d_loss(self.discriminator(real), self.discriminator(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        check_step(loss, self.discriminator, step=step, what="discriminator")
        self.opt_d.step()
        return {"loss_d": float(loss.detach())}

    def target_step(self, images: torch.Tensor, labels: torch.Tensor, *, step: int = 0) -> dict[str, float]:
        """One T step (SGD) on ``images`` ``Tensor[B, 1, H, W]`` with ``labels`` ``Tensor[B]``; S is not used."""
        self.target.train()
        loss = self.target_adapter.loss(images, labels)
        self.opt_t.zero_grad(set_to_none=True)
        check_step(loss, self.target, step=step, what="target")
        self.opt_t.step()
        return {"loss_t": float(loss.detach())}

    # ------------------------------------------------------------------ phases

    def _draw_index(self, generator: torch.Generator, allowed: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` indices of source digits whose class is ``allowed`` (``Tensor[num_classes]`` bool)."""
        pool = allowed.to(self.labels.device)[self.labels].nonzero().flatten()
        pick = torch.randint(pool.numel(), (n,), generator=generator)
        return pool[pick.to(pool.device)]

    def run_synthesizer_phase(self, cycle: int, progress: Progress | None = None) -> tuple[HardExampleCache, dict[str, Any]]:
        """Train S against the frozen T until the cache holds ``hard_per_class`` of every class
        (or ``s_max_steps`` batches). Returns the cache and the phase's statistics."""
        cfg = self.config
        cache = HardExampleCache(cfg.num_classes, cfg.hard_per_class, policy=cfg.cache_policy, device=self.device)
        generator = make_generator(cfg.seed, "S", cycle)
        rows: list[dict[str, float]] = []
        task = f"cycle {cycle}: synthesizer"
        with scoped_rng(derive_seed(cfg.seed, "S-dropout", cycle), self.device):
            for step in range(cfg.s_max_steps):
                # draw only digits of classes that still need hard examples (all, once every class is full)
                need = ~cache.class_full()
                index = self._draw_index(generator, need if bool(need.any()) else ~need, cfg.s_batch_size)
                losses, batch = self.synthesizer_update(index, generator, step=step)
                cache.add(batch.images, batch.labels, batch.params, batch.index, batch.hardness, accept=batch.hard)
                if self.discriminator is not None:
                    real = self.images[self._draw_index(generator, torch.ones(cfg.num_classes, dtype=torch.bool), cfg.s_batch_size)]
                    losses.update(self.discriminator_step(real, batch.images, step=step))
                rows.append(losses)
                if progress is not None:
                    progress(task, len(cache), cache.capacity)
                if cache.full and step + 1 >= cfg.s_min_steps:
                    break
        stats = {
            "s_steps": len(rows),
            "s_loss": _mean(rows, "loss_s"),
            "s_target_loss": _mean(rows, "loss_t"),
            "s_hard_frac": _mean(rows, "hard_frac"),
            "s_first_hard_frac": rows[0]["hard_frac"],
            "s_last_hard_frac": rows[-1]["hard_frac"],
        }
        if self.discriminator is not None:
            stats.update(d_loss=_mean(rows, "loss_d"), s_adv_loss=_mean(rows, "loss_adv"))
        return cache, stats

    def run_random_phase(self, cycle: int) -> tuple[HardExampleCache, dict[str, Any]]:
        """The baseline source: ``hard_per_class`` random digits of each class under random
        AffNIST-recipe transforms (no hardness filter)."""
        cfg = self.config
        generator = make_generator(cfg.seed, "random", cycle)
        parts = []
        for c in range(cfg.num_classes):
            pool = (self.labels == c).nonzero().flatten()
            pick = torch.randint(pool.numel(), (cfg.hard_per_class,), generator=generator)
            parts.append(pool[pick.to(pool.device)])
        index = torch.cat(parts)
        fg = self.images[index]
        params = sample_affnist_params(fg, generator).params.to(fg.dtype)
        images = render_digits(fg, params)
        labels = self.labels[index]
        with freeze(self.target), torch.no_grad():
            probs = self.target_adapter.probs(images)
        cache = HardExampleCache(cfg.num_classes, cfg.hard_per_class, device=self.device)
        cache.add(images, labels, params, index, hardness_from_probs(probs, labels))
        hard = is_hard_from_probs(probs, labels, cfg.hard_margin)
        return cache, {"s_steps": 0, "s_hard_frac": float(hard.float().mean())}

    def training_sources(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """T's training set: the real digits plus every cache so far (or only the latest)."""
        caches = [c for c in (self.caches if self.config.accumulate else self.caches[-1:]) if len(c)]
        sources = [(self.images, self.labels)]
        if caches:
            sources.append((torch.cat([c.images for c in caches]), torch.cat([c.labels for c in caches])))
        return sources

    def run_target_phase(self, cycle: int, progress: Progress | None = None) -> dict[str, Any]:
        """Train T for ``t_epochs`` on :meth:`training_sources` (S frozen: not used)."""
        cfg = self.config
        lr = cfg.lr_t_drop_to if (cfg.lr_t_drop_cycle is not None and cycle >= cfg.lr_t_drop_cycle) else cfg.lr_t
        for group in self.opt_t.param_groups:
            group["lr"] = lr
        sources = self.training_sources()
        subsample = [cfg.t_real_per_epoch] + [None] * (len(sources) - 1)
        with freeze(self.synthesizer), scoped_rng(derive_seed(cfg.seed, "T-dropout", cycle), self.device):
            stats = fit_classifier(
                self.target,
                self.opt_t,
                sources,
                num_classes=cfg.num_classes,
                epochs=cfg.t_epochs,
                batch_size=cfg.t_batch_size,
                generator=make_generator(cfg.seed, "T", cycle),
                subsample=subsample,
                progress=progress,
                task=f"cycle {cycle}: target",
            )
        self.target.eval()
        return {"t_loss": stats["loss"], "lr_t": lr, "t_samples_per_epoch": int(stats["samples"]), "synthetic_total": sum(len(c) for c in self.caches)}

    # ------------------------------------------------------------------ the run

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def _cycle_dir(self, cycle: int) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "cycles" / f"cycle_{cycle:03d}"

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model and optimiser states, history, cycle count."""
        state: dict[str, Any] = {
            "cycle": self.completed_cycles,
            "config": self.config.to_dict(),
            "synthesizer": self.synthesizer.state_dict(),
            "target": self.target.state_dict(),
            "opt_s": self.opt_s.state_dict(),
            "opt_t": self.opt_t.state_dict(),
            "history": self.history,
            "cache_sizes": [len(c) for c in self.caches],
        }
        if self.discriminator is not None and self.opt_d is not None:
            state.update(discriminator=self.discriminator.state_dict(), opt_d=self.opt_d.state_dict())
        return state

    def _check_resumable(self, saved: dict[str, Any], path: Path) -> None:
        check_same_config(saved, self.config.to_dict(), ignore=("cycles",), file=path)  # more cycles extend a run

    def load_state(self, state: dict[str, Any], path: Path) -> None:
        """Restore from a checkpoint dict (and the per-cycle cache files next to it)."""
        self._check_resumable(state["config"], path)
        self.synthesizer.load_state_dict(state["synthesizer"])
        self.target.load_state_dict(state["target"])
        self.opt_s.load_state_dict(state["opt_s"])
        self.opt_t.load_state_dict(state["opt_t"])
        if self.discriminator is not None and self.opt_d is not None:
            if "discriminator" not in state:
                raise InputError("the checkpoint has no discriminator state", file=path, field="discriminator")
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.history = list(state["history"])
        self.completed_cycles = int(state["cycle"])
        sizes = list(state["cache_sizes"])
        if len(sizes) != self.completed_cycles:
            raise InputError(f"lists {len(sizes)} caches for {self.completed_cycles} cycles", file=path, field="cache_sizes")
        self.caches = [
            HardExampleCache.load(self._cycle_dir(c) / "samples.npz", device=self.device)
            if n
            else HardExampleCache(self.config.num_classes, self.config.hard_per_class, device=self.device)
            for c, n in enumerate(sizes, start=1)
        ]

    def _record_fault(self, exc: NonFiniteError, cycle: int) -> NoReturn:
        """Record a non-finite loss/gradient in ``events.json`` and stop (re-raise): ``checkpoint.pt``
        still holds the last good cycle, which ``resume`` continues from."""
        if self.run_dir is not None:
            record_event(self.run_dir, exc.event, cycle=cycle, action="stopped; resume continues from the last checkpoint")
        raise exc

    def _write_cycle(self, cycle: int, cache: HardExampleCache) -> dict[str, str]:
        folder = self._cycle_dir(cycle)
        cache.save(folder / "samples.npz")
        return {"samples": str(folder / "samples.npz")}

    def run(
        self,
        *,
        max_cycles: int | None = None,
        resume: bool = False,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        progress: Progress | None = None,
        export: bool = True,
        on_cycle: Callable[[int, HardExampleCache, Path], dict[str, str]] | None = None,
    ) -> TerseRunResult:
        """Run cycles until ``config.cycles`` are done (or ``max_cycles`` in total, to stop early).

        Args:
            max_cycles: stop once this many cycles are complete (counting resumed ones).
            resume: continue from ``run_dir/checkpoint.pt`` if it exists.
            evaluate: called with T after each cycle; its numbers go into the history.
            progress: ``progress(task, done, total)`` callback.
            export: export the final target when the last cycle is done.
            on_cycle: with a run folder, called as ``on_cycle(cycle, cache, cycle_folder)`` after a
                cycle that cached samples (e.g. a job writing a sample grid); returns the files it wrote.

        Raises:
            InputError: ``run_dir`` already holds a checkpoint and ``resume`` is false, or the
                checkpoint was made with a different configuration.
        """
        cfg = self.config
        ckpt = self.checkpoint_path
        if ckpt is not None:
            if ckpt.is_file():
                if not resume:
                    raise InputError("the run folder already holds a checkpoint; resume it (--resume) or choose another folder", file=ckpt)
                self.load_state(load_checkpoint(ckpt, map_location=self.device), ckpt)
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        elif resume:
            raise InputError("resuming needs a run folder", field="run_dir")
        stop = cfg.cycles if max_cycles is None else min(cfg.cycles, max_cycles)
        files: dict[str, str] = {}
        while self.completed_cycles < stop:
            cycle = self.completed_cycles + 1
            t0 = time.perf_counter()
            try:
                if cfg.source == "terse":
                    cache, record = self.run_synthesizer_phase(cycle, progress)
                else:
                    cache, record = self.run_random_phase(cycle)
            except NonFiniteError as exc:
                self._record_fault(exc, cycle)
            t1 = time.perf_counter()
            record = {"cycle": cycle, **record, "cache_size": len(cache), "cache_full": cache.full, "cache_counts": cache.counts.tolist()}
            if len(cache):
                record["cache_hardness_mean"] = float(cache.hardness.mean())
            self.caches.append(cache)  # one per cycle, possibly empty (then it adds nothing to T's data)
            if self.reference is not None and len(cache):
                record["unrecognised_frac"] = unrecognised_fraction(
                    self.reference, cache.images, cache.labels, num_classes=cfg.num_classes, batch_size=cfg.eval_batch_size
                )
            try:
                record.update(self.run_target_phase(cycle, progress))
            except NonFiniteError as exc:
                self._record_fault(exc, cycle)
            t2 = time.perf_counter()
            record.update(s_seconds=t1 - t0, t_seconds=t2 - t1)
            if evaluate is not None:
                record.update(evaluate(self.target))
            self.history.append(record)
            self.completed_cycles = cycle
            if self.run_dir is not None:
                if len(cache):
                    written = self._write_cycle(cycle, cache)
                    if on_cycle is not None:
                        written.update(on_cycle(cycle, cache, self._cycle_dir(cycle)))
                    files.update({f"cycle_{cycle:03d}_{k}": v for k, v in written.items()})
                save_checkpoint(self.checkpoint_path, self.state_dict())
                atomic_write_json(self.run_dir / "history.json", self.history)
        finished = self.completed_cycles >= cfg.cycles
        exported = None
        if finished and export and self.run_dir is not None:
            exported = export_classifier(
                self.target,
                self.run_dir / "target.pt2",
                input_shape=(1, *self.canvas),
                num_classes=cfg.num_classes,
                extra={"cycles": self.completed_cycles, "config": cfg.to_dict()},
            )
            files["model"] = str(self.run_dir / exported["file"])
        return TerseRunResult(self.history, self.caches, self.completed_cycles, finished, self.run_dir, exported, files)
