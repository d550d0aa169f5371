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
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.data.affnist import sample_affnist_params, translation_bounds
from synthloop.errors import InputError
from synthloop.functional.losses import d_loss, g_loss
from synthloop.loops.cache import HardExampleCache, render_digits
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.export import export_classifier
from synthloop.loops.faults import NonFiniteError, check_step, record_event
from synthloop.loops.terse_classification_config import RangesConfig, TerseClassificationConfig
from synthloop.loops.terse_diagnostics import added_set_diagnostics, diversity_ratio
from synthloop.loops.terse_methods import (
    SnapshotReplay,
    anchored_params,
    concentration_penalty,
    make_ema_teacher,
    merge_caches,
    s_sample_loss,
    worst_of_k_select,
)
from synthloop.loops.training import fit_classifier, scoped_rng, sgd
from synthloop.metrics.classification import accuracy, check_dataset, check_labels, model_device
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.discriminator import PatchDiscriminator
from synthloop.models.synthesizer import MNISTSynthesizer
from synthloop.models.targets import ClassifierTarget, freeze, hardness_from_probs, is_hard_from_probs
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.progress import Progress
from synthloop.utils.records import check_same_config
from synthloop.utils.seeding import derive_seed, make_generator

Range = tuple[float, float]


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
        reference: optional classifier trained with random in-range augmentation: the readability
            check, and the teacher of ``teacher: reference``.
        clean: optional classifier trained on clean digits only, for the affinity diagnostic.
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
        clean: nn.Module | None = None,
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
        if cfg.s_zero_init:
            last = [m for m in synthesizer.modules() if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
        self.synthesizer = synthesizer.to(self.device)
        self.replay = SnapshotReplay(self.synthesizer, cfg.s_replay)
        self.clean = clean
        self.clean_real_acc = None if clean is None else accuracy(clean, self.images[:4096], self.labels[:4096], num_classes=cfg.num_classes)
        self.ema = make_ema_teacher(self.target, cfg.teacher_decay) if (cfg.objective == "teacher" and cfg.teacher == "ema") else None
        if cfg.objective == "teacher" and cfg.teacher == "reference" and reference is None:
            raise InputError("teacher: reference needs a reference classifier", field="teacher")
        self.teacher_model = self.ema if self.ema is not None else (reference if cfg.objective == "teacher" else None)
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
        images, params, _ = self.synthesize_unit(index, generator)
        return images, params

    def synthesize_unit(self, index: torch.Tensor, generator: torch.Generator | None = None, model: nn.Module | None = None) -> tuple[torch.Tensor, ...]:
        """:meth:`synthesize` with ``model`` (default: S) that also returns the unit coordinates
        ``Tensor[B, 6]`` of the params (:mod:`~synthloop.loops.terse_methods`). With ``anchor:
        random_delta`` a recipe draw is taken from ``generator`` and S's raw output moves it."""
        cfg, net = self.config, (model if model is not None else self.synthesizer)
        fg = self.images[index]
        out = net(fg, generator=generator) if cfg.s_noise_dim > 0 else net(fg)
        if cfg.anchor == "random_delta":
            if generator is None:
                raise InputError("anchor: random_delta draws from a generator; pass one", field="anchor")
            u_random = torch.rand(fg.shape[0], 6, generator=generator, device=generator.device).to(fg.device, fg.dtype)
            params, unit = anchored_params(out["raw"][:, :6], u_random, cfg.anchor_bound, self._ranges())
        else:
            params, unit = out["params"], torch.sigmoid(out["raw"][:, :6])
        if cfg.fit_translation:
            params = fit_translation(fg, params, cfg.ranges.tx, cfg.ranges.ty, self.canvas)
        return render_digits(fg, params), params, unit

    def _ranges(self) -> list[Range]:
        r = self.config.ranges
        return [r.angle, r.tx, r.ty, r.shear, r.sx, r.sy]

    def sample_loss(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-sample S-loss Tensor[B], T's logits Tensor[B, C])`` under ``config.objective``
        (:func:`~synthloop.loops.terse_methods.s_sample_loss`); call with T (and the teacher) frozen."""
        cfg = self.config
        logits = self.target_adapter.logits(images) if logits is None else logits
        teacher_logits = None
        if cfg.objective == "teacher":
            assert self.teacher_model is not None
            with freeze(self.teacher_model):
                teacher_logits = self.teacher_model(images)
        return s_sample_loss(logits, labels, cfg.objective, teacher_logits, cfg.teacher_weight), logits

    def synthesizer_update(self, index: torch.Tensor, generator: torch.Generator | None = None, *, step: int = 0) -> tuple[dict[str, float], SynthBatch]:
        """One S step on the digits at ``index``: minimise the S-loss of ``config.objective`` (paper:
        maximise T's loss; plus fooling D, plus the diversity penalty), T, teacher and D frozen.
        A NaN/inf loss or gradient raises :class:`~synthloop.loops.faults.NonFiniteError` naming ``step``.

        Returns the losses (``loss_s`` minimised by S, ``loss_t`` T's cross-entropy on the batch,
        ``loss_adv`` with D, ``concentration`` with a diversity weight, ``hard_frac``) and the
        batch's composites with T's verdicts.
        """
        cfg = self.config
        labels = self.labels[index]
        self.synthesizer.train()
        with self._freeze_judges():
            images, params, unit = self.synthesize_unit(index, generator)
            per_sample, logits = self.sample_loss(images, labels)
            loss = per_sample.mean()
            losses: dict[str, float] = {}
            if self.discriminator is not None:
                adv = g_loss(self.discriminator(images))
                loss = loss + cfg.adv_weight * adv
                losses["loss_adv"] = float(adv.detach())
            if cfg.diversity_weight > 0:
                conc = concentration_penalty(unit, cfg.diversity_sigma)
                loss = loss + cfg.diversity_weight * conc
                losses["concentration"] = float(conc.detach())
            self.opt_s.zero_grad(set_to_none=True)
            check_step(loss, self.synthesizer, step=step, what="synthesizer")
            self.opt_s.step()
        batch = self._judge(index, images.detach(), params.detach(), logits.detach(), losses)
        losses["loss_s"] = float(loss.detach())
        return losses, batch

    def _judge(self, index: torch.Tensor, images: torch.Tensor, params: torch.Tensor, logits: torch.Tensor, losses: dict[str, float]) -> SynthBatch:
        """T's verdicts on a batch (``hard_frac`` and ``loss_t`` go into ``losses``)."""
        labels = self.labels[index]
        probs = logits.softmax(1)
        hard = is_hard_from_probs(probs, labels, self.config.hard_margin)
        losses.update(loss_t=float(F.cross_entropy(logits, labels)), hard_frac=float(hard.float().mean()))
        return SynthBatch(images, labels, params, index, hardness_from_probs(probs, labels), hard)

    def generate_batch(self, index: torch.Tensor, generator: torch.Generator | None, model: nn.Module) -> tuple[dict[str, float], SynthBatch]:
        """Composites of ``model`` (S or a replayed snapshot, in ``train()`` mode: dropout on) for the
        digits at ``index``, no update; returns ``(losses, batch)`` like :meth:`synthesizer_update`."""
        model.train()
        with self._freeze_judges(), torch.no_grad():
            images, params, _ = self.synthesize_unit(index, generator, model)
            logits = self.target_adapter.logits(images)
        losses: dict[str, float] = {}
        return losses, self._judge(index, images, params, logits, losses)

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

    def run_synthesizer_phase(self, cycle: int, progress: Progress | None = None, per_class: int | None = None) -> tuple[HardExampleCache, dict[str, Any]]:
        """Train S against the frozen T until the cache holds ``per_class`` (default
        ``hard_per_class``) of every class (or ``s_max_steps`` batches). In a cycle where S does not
        train (``s_update_every``) it only generates; with ``s_replay`` each batch offered to the
        cache comes from a random one of the snapshots and the current S. Returns the cache and the
        phase's statistics."""
        cfg = self.config
        cache = HardExampleCache(cfg.num_classes, per_class or cfg.hard_per_class, policy=cfg.cache_policy, device=self.device)
        generator = make_generator(cfg.seed, "S", cycle)
        rows: list[dict[str, float]] = []
        task = f"cycle {cycle}: synthesizer"
        train_s = (cycle - 1) % cfg.s_update_every == 0
        with scoped_rng(derive_seed(cfg.seed, "S-dropout", cycle), self.device):
            for step in range(cfg.s_max_steps):
                # draw only digits of classes that still need hard examples (all, once every class is full)
                need = ~cache.class_full()
                index = self._draw_index(generator, need if bool(need.any()) else ~need, cfg.s_batch_size)
                if train_s and (cfg.s_train_steps is None or step < cfg.s_train_steps):
                    losses, batch = self.synthesizer_update(index, generator, step=step)
                else:
                    losses, batch = self.generate_batch(index, generator, self.synthesizer)
                if len(self.replay):
                    pick = int(torch.randint(len(self.replay) + 1, (1,), generator=generator))
                    if pick < len(self.replay):
                        replayed, batch = self.generate_batch(index, generator, self.replay.model(pick))
                        losses["replay_hard_frac"] = replayed["hard_frac"]
                cache.add(batch.images, batch.labels, batch.params, batch.index, batch.hardness, accept=batch.hard)
                if self.discriminator is not None:
                    real = self.images[self._draw_index(generator, torch.ones(cfg.num_classes, dtype=torch.bool), cfg.s_batch_size)]
                    losses.update(self.discriminator_step(real, batch.images, step=step))
                rows.append(losses)
                if progress is not None:
                    progress(task, len(cache), cache.capacity)
                if cache.full and (step + 1 >= cfg.s_min_steps or not train_s):
                    break
        if train_s:
            self.replay.push(self.synthesizer)
        stats = {
            "s_steps": len(rows),
            "s_loss": _mean(rows, "loss_s"),
            "s_target_loss": _mean(rows, "loss_t"),
            "s_hard_frac": _mean(rows, "hard_frac"),
            "s_trained": train_s,
            "s_first_hard_frac": rows[0]["hard_frac"],
            "s_last_hard_frac": rows[-1]["hard_frac"],
        }
        if self.discriminator is not None:
            stats.update(d_loss=_mean(rows, "loss_d"), s_adv_loss=_mean(rows, "loss_adv"))
        return cache, stats

    def run_random_phase(self, cycle: int, per_class: int | None = None, *, k: int = 1, key: str = "random") -> tuple[HardExampleCache, dict[str, Any]]:
        """The baseline source: ``per_class`` (default ``hard_per_class``) random digits of each
        class under random AffNIST-recipe transforms (no hardness filter). With ``k > 1`` (the
        ``worst_of_k`` source) each digit gets ``k`` recipe draws and keeps the one with the lowest
        S-loss under the frozen T (paper objective: the highest T loss)."""
        cfg = self.config
        n = per_class or cfg.hard_per_class
        generator = make_generator(cfg.seed, key, cycle)
        parts = []
        for c in range(cfg.num_classes):
            pool = (self.labels == c).nonzero().flatten()
            pick = torch.randint(pool.numel(), (n,), generator=generator)
            parts.append(pool[pick.to(pool.device)])
        index = torch.cat(parts)
        fg = self.images[index.repeat_interleave(k)]
        params = sample_affnist_params(fg, generator).params.to(fg.dtype)
        images = render_digits(fg, params)
        labels = self.labels[index]
        with freeze(self.target), torch.no_grad():
            if k > 1:
                scores, logits = self.sample_loss(images, labels.repeat_interleave(k))
                rows = torch.arange(len(index), device=scores.device) * k + worst_of_k_select(scores.reshape(-1, k))
                images, params, logits = images[rows], params[rows], logits[rows]
                probs = logits.softmax(1)
            else:
                probs = self.target_adapter.probs(images)
        cache = HardExampleCache(cfg.num_classes, n, device=self.device)
        cache.add(images, labels, params, index, hardness_from_probs(probs, labels))
        hard = is_hard_from_probs(probs, labels, cfg.hard_margin)
        return cache, {"s_steps": 0, "s_hard_frac": float(hard.float().mean())}

    def build_cache(self, cycle: int, progress: Progress | None = None) -> tuple[HardExampleCache, dict[str, Any]]:
        """This cycle's added samples from ``config.source``, with ``mix_random`` of each class
        replaced by plain recipe draws (one cache: the learned part first)."""
        cfg = self.config
        n_random = round(cfg.mix_random * cfg.hard_per_class) if cfg.source != "random" else 0
        n_learned = cfg.hard_per_class - n_random
        cache, record = HardExampleCache(cfg.num_classes, cfg.hard_per_class, device=self.device), {}
        if n_learned and cfg.source == "terse":
            cache, record = self.run_synthesizer_phase(cycle, progress, n_learned)
        elif n_learned:
            cache, record = self.run_random_phase(cycle, n_learned, k=cfg.worst_k if cfg.source == "worst_of_k" else 1)
        if n_random:
            mixed, _ = self.run_random_phase(cycle, n_random, key="mix-random")
            cache = merge_caches([cache, mixed], cfg.num_classes, cfg.hard_per_class, self.device)
            record["mix_random_added"] = len(mixed)
        return cache, record

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
        subsample = [cfg.t_real_per_epoch] + [cfg.t_synthetic_per_epoch] * (len(sources) - 1)

        def on_step(task: str, done: int, total: int) -> None:  # fit_classifier reports after every optimiser step
            if self.ema is not None:
                self.ema.update_parameters(self.target)
            if progress is not None:
                progress(task, done, total)

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
                progress=on_step if (self.ema is not None or progress is not None) else None,
                task=f"cycle {cycle}: target",
            )
        self.target.eval()
        return {"t_loss": stats["loss"], "lr_t": lr, "t_samples_per_epoch": int(stats["samples"]), "synthetic_total": sum(len(c) for c in self.caches)}

    # ------------------------------------------------------------------ diagnostics and the run

    def _diag_real(self, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random subset of the real digits for the diversity ratio."""
        pick = torch.randperm(self.images.shape[0], generator=make_generator(self.config.seed, "diagnostics"))[:n].to(self.device)
        return self.images[pick], self.labels[pick]

    def diagnose(self, cache: HardExampleCache) -> dict[str, Any]:
        """Diagnostics of a cycle's added set before T trains on it (:mod:`~synthloop.loops.terse_diagnostics`)."""
        if not len(cache):
            return {}
        cfg = self.config
        out = added_set_diagnostics(
            cache.images, cache.labels, cache.params, self.images[cache.source_index], ranges=self._ranges(), reference=self.reference,
            clean=self.clean, clean_real_acc=self.clean_real_acc, num_classes=cfg.num_classes, batch_size=cfg.eval_batch_size,
        )  # fmt: skip
        if "readability" in out:
            out["unrecognised_frac"] = 1.0 - float(out["readability"])
        return out

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
        if self.ema is not None:
            state["teacher"] = self.ema.state_dict()
        if self.config.s_replay:
            state["replay"] = self.replay.state_dict()
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
        if self.ema is not None:
            self.ema.load_state_dict(state["teacher"])
        self.replay.load_state_dict(state.get("replay", []))
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
                cache, record = self.build_cache(cycle, progress)
            except NonFiniteError as exc:
                self._record_fault(exc, cycle)
            t1 = time.perf_counter()
            record = {"cycle": cycle, **record, "cache_size": len(cache), "cache_full": cache.full, "cache_counts": cache.counts.tolist()}
            if len(cache):
                record["cache_hardness_mean"] = float(cache.hardness.mean())
            self.caches.append(cache)  # one per cycle, possibly empty (then it adds nothing to T's data)
            record.update(self.diagnose(cache))
            try:
                record.update(self.run_target_phase(cycle, progress))
            except NonFiniteError as exc:
                self._record_fault(exc, cycle)
            if len(cache):
                real = self._diag_real()
                record["diversity"] = diversity_ratio(
                    self.target, (cache.images, cache.labels), real, num_classes=cfg.num_classes, batch_size=cfg.eval_batch_size
                )
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


__all__ = ["RangesConfig", "SynthBatch", "TerseClassificationConfig", "TerseClassificationLoop", "TerseRunResult", "fit_translation"]
