"""The TERSE scene loop for object detection (TERSE section 3, supplementary A.2).

Three players: the synthesizer S (:class:`~synthloop.models.synthesizer.SceneSynthesizer`) looks
at K foreground cut-outs and a background and predicts where (and, beyond the paper, with which
brightness and contrast) to paste each one; the target detector T
(:class:`~synthloop.models.detection.DetectionTarget`) and, optionally, the realism discriminator D
(:class:`~synthloop.models.discriminator.PatchDiscriminator`) judge the composites.

Composites are :class:`~synthloop.compose.params.SceneParams` with a ``frame``, composited by
:mod:`synthloop.compose.scene_batch` (background, TERSE artefact, letterboxed cut-outs warped by
the spatial transformer with the A.2 clean-up, labels from the visible masks): the same code for
S's training batches, generation and :func:`replay_scene`.

One *cycle* (:meth:`SceneTerse.cycle`), as in A.2:

1. **S phase** (``synthesizer="terse"``): ``s_steps`` Adam steps on random fg/bg pairs with T and D
   frozen (:func:`~synthloop.models.freeze`: ``eval()`` mode, no ``requires_grad``, not in S's
   optimiser). S's loss is ``-bound(L_T) + adv_weight * g_loss(D(composite))`` (D term only when
   the discriminator is on), ``L_T`` T's detection loss (eq. 1) on the composite with its
   visible-object targets. ``bound(L) = s_loss_bound * tanh(L / s_loss_bound)`` is a soft clamp
   of the paper's unbounded ``L_T`` (eq. 3; slope 0.91-0.99 at the default 10 and the losses of
   1-3 seen on digit scenes), so S gains nothing from pushing a hopeless object further and its
   gradient does not swamp D's; ``s_loss_bound: null`` restores the raw ``-L_T``. A NaN/inf loss
   or gradient skips the S step (``s_skipped``) and stops the run in D and T (``events.json``).
   Translation anchors: every object gets a random anchor ``u`` in ``[0, 1]^2`` (part of the sampled layout) and S's translation is
   ``lerp(lo, hi, sigmoid(logit(u) + raw))``, so an untrained S places objects at uniform random
   positions instead of stacking all K at the centre; S can still move them anywhere in range.
2. **Generation** (:meth:`SceneTerse.generate`): composites of random fg/bg pairs placed by S (in
   ``eval()`` mode with its dropout active, TERSE's source of variety; BatchNorm uses its running
   statistics) or, with ``synthesizer="random"``, by placements uniform in ``ranges`` (the random
   cut-paste baseline through the same code). T scores the labelled objects
   (:meth:`~synthloop.models.detection.DetectionTarget.confidence`); ``keep="hard"`` keeps a
   composite when some object's confidence is below ``hard_threshold`` (A.2's rule), until
   ``hard_per_cycle`` are kept or ``max_candidates_per_cycle`` were tried (the history records
   both); ``keep="all"`` keeps the first ``hard_per_cycle``. A composite with no labelled object
   counts as tried and is never kept.
3. **T phase**: :func:`~synthloop.loops.detection_training.train_detector` for ``t_epochs`` over the
   real set, every batch ``real_ratio`` real:synthetic from all scenes kept so far (S not used).
4. **D phase** (discriminator on): ``d_steps`` Adam steps (default: ``t_epochs`` passes over the
   real set in batches of ``batch_size``) on real images vs composites of the frozen S.

Randomness and determinism: every S step, D step and generation batch draws its pairs from a
``torch.Generator`` derived from ``(seed, phase, step counter)`` and runs S's dropout under a
seeded, restored global RNG (:func:`~synthloop.loops.training.scoped_rng`); T's epochs are seeded
per cycle. Nothing depends on the global RNG, so two runs with one seed give identical images
and history, and the step counters (saved in the checkpoint) are the whole RNG state: a run
resumed from the checkpoint written after any cycle continues exactly as the uninterrupted run.

Replay: every kept scene's ``params`` (:class:`~synthloop.compose.params.SceneParams`) hold the
background, the artefact, the cut-outs and their categories, the (K, 6) placements, the
photometric factors, the blend mode and the frame; :func:`replay_scene` composites them again
bit-identically (one scene at a time in generation and replay alike).

Run folder (``run(out_dir)``): ``config.yaml`` (resolved), ``checkpoint.pt`` (S, T's model, D,
S's and D's optimisers, history, the kept scenes' params, step counters; written atomically
after every cycle), ``history.json`` and ``scenes.json`` (every kept scene's params). T's
optimiser is created afresh by ``train_detector`` in every cycle, so it needs no saving. Write the
kept scenes as a COCO data set with :func:`write_synthetic_coco`.
Measured speed and budgets: ``benchmarks/detection.py`` and ``benchmarks/results/detection*.json``.

Plausible hard scenes (issue 11; each a config value, all off by default): ``objective="teacher"``
adds ``teacher_weight * bound(L_teacher)`` to S's loss, a teacher detector (a frozen copy of T at
the start, or an EMA of T) that must still detect the objects (gradient to S only;
:mod:`~synthloop.loops.terse_detection_objectives`); ``constraints`` learns scale, aspect (tied to
the source), overlap and position limits from the real boxes and bounds rotation
(:mod:`~synthloop.loops.scene_constraints`; overlaps beyond the real set's are dropped from every
generated scene); ``s_noise_dim`` makes S stochastic (starting at the random sampler's centre);
``s_replay`` draws each generation batch's S from the last snapshots; ``mix_random`` makes a share of
each cycle's composites by random paste; ``worst_of_k`` keeps, per slot, the hardest of k random scenes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthloop.compose.batch import SceneComposite
from synthloop.compose.params import ArtefactParams, BlendSpec, CutoutFrame, ObjectParams, SceneParams
from synthloop.compose.scene_batch import canvas_batch, composite_batch, cutouts
from synthloop.errors import InputError
from synthloop.functional.losses import d_loss, g_loss
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.detection_training import train_detector
from synthloop.loops.faults import NonFiniteError, check_step, finite_backward, record_event
from synthloop.loops.scene_constraints import SceneConstraints, drop_overlaps, learn_constraints, tie_aspect
from synthloop.loops.terse_detection_config import SceneTerseConfig
from synthloop.loops.terse_detection_objectives import ema_update, make_teacher, pick_synth, snapshot, worst_of_k_layout, zero_last_linear
from synthloop.loops.terse_detection_scenes import SyntheticScene, _composite_scene, _labels, replay_scene, write_synthetic_coco
from synthloop.loops.training import scoped_rng
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.detection import DetectionTarget, LabelMap, is_hard_from_confidence
from synthloop.models.discriminator import PatchDiscriminator
from synthloop.models.synthesizer import SceneSynthesizer, to_color_params
from synthloop.models.targets import freeze
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.progress import Progress
from synthloop.utils.records import check_same_config
from synthloop.utils.seeding import derive_seed, make_generator

Range = tuple[float, float]

ANCHOR_EPS = 1e-3


@dataclass
class SceneTerseResult:
    """What :meth:`SceneTerse.run` leaves: every kept composite in order and the per-cycle history."""

    scenes: list[SyntheticScene]
    history: list[dict[str, Any]]
    completed_cycles: int = 0
    out_dir: Path | None = None


# --------------------------------------------------------------------------------------------
# the loop


def _mean(rows: Sequence[Mapping[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return float(sum(vals) / len(vals)) if vals else None


def _uniform(g: torch.Generator, lo: torch.Tensor, hi: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, lo.numel(), generator=g, dtype=torch.float64).float()


class SceneTerse:
    """The A.2 loop: S (or random placements), T, optionally D, on real images + foreground and background banks.

    Args:
        config: :class:`SceneTerseConfig`.
        target: T, a :class:`DetectionTarget` (or a bare torchvision detection model, wrapped with
            ``label_map``; its ``num_classes`` must match it). Trained in place.
        real_images: ``(N, 3, H, W)`` in [0, 1]: T's and D's real data; composites are rendered at ``(H, W)``.
        real_targets: their torchvision targets.
        foregrounds: cut-outs (:class:`~synthloop.compose.sources.TensorInstances`, ``BankInstances``:
            ``__len__``, ``tensor(i) -> (rgb, alpha)``, ``category_of(i)``).
        backgrounds: a background source (``sample_one(size, generator) -> params``,
            ``render_one(params, size) -> (H, W, 3)``), e.g. :class:`~synthloop.data.backgrounds.BackgroundBank`.
        label_map: needed only when ``target`` is a bare model (default: ``target.label_map``).
        synthesizer, discriminator: optional prebuilt S and D.
        device: where the networks run.

    Raises:
        InputError: empty foreground bank, a foreground category missing from the label map
            (naming it), malformed real data, a model whose ``num_classes`` does not match.
    """

    def __init__(
        self,
        config: SceneTerseConfig,
        target: DetectionTarget | nn.Module,
        real_images: torch.Tensor,
        real_targets: Sequence[Mapping[str, torch.Tensor]],
        foregrounds: Any,
        backgrounds: Any,
        *,
        label_map: LabelMap | None = None,
        synthesizer: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        teacher: DetectionTarget | None = None,
        device: torch.device | str = "cpu",
    ):
        self.config = cfg = config
        self.device = torch.device(device)
        if not isinstance(target, DetectionTarget):
            if label_map is None:
                raise InputError("a bare detection model needs label_map (or pass a DetectionTarget)", field="label_map")
            target = DetectionTarget(target, label_map)
        self.target = target
        guard_strided_1x1_convs(target.model)
        self.label_map = target.label_map
        if not isinstance(real_images, torch.Tensor) or real_images.ndim != 4 or real_images.shape[1] != 3 or real_images.shape[0] == 0:
            shape = tuple(real_images.shape) if isinstance(real_images, torch.Tensor) else type(real_images).__name__
            raise InputError(f"real_images must be a non-empty Tensor[N, 3, H, W], got {shape}", field="real_images")
        if len(real_targets) != real_images.shape[0]:
            raise InputError(f"{len(real_targets)} real targets for {real_images.shape[0]} real images", field="real_targets")
        target.check_targets(real_images, real_targets)
        self.real_images = real_images
        self.real_targets = [{"boxes": torch.as_tensor(t["boxes"]).float().reshape(-1, 4), "labels": torch.as_tensor(t["labels"]).long()} for t in real_targets]
        self.canvas = (int(real_images.shape[-2]), int(real_images.shape[-1]))
        if foregrounds is None or len(foregrounds) == 0:
            raise InputError("the foreground bank is empty", field="foregrounds")
        known = set(self.label_map.category_ids)
        self._fg_categories = [int(foregrounds.category_of(i)) for i in range(len(foregrounds))]
        for i, c in enumerate(self._fg_categories):
            if c not in known:
                raise InputError(
                    f"foreground {i} has category id {c}, which is not in the label map (known ids: {sorted(known)})",
                    field=f"foregrounds[{i}].category_id",
                )
        self.foregrounds = foregrounds
        self.backgrounds = backgrounds
        self.param_ranges = cfg.ranges.to_param_ranges(self.canvas)
        self.constraints: SceneConstraints | None = None
        if cfg.constraints:  # plausibility learned from the real boxes: narrowed ranges, sy = sx, overlaps dropped
            self.constraints = learn_constraints(self.real_targets, self.canvas, fg_size=cfg.fg_size, fg_fill=cfg.fg_fill, max_rotation=cfg.max_rotation)
            self.param_ranges = self.constraints.ranges(self.param_ranges, cfg.fg_fill * cfg.fg_size)
        lo, hi = self.param_ranges.bounds()
        self._aff_lo, self._aff_hi = torch.tensor(lo), torch.tensor(hi)
        plo, phi = cfg.photometric_ranges.to_photometric_ranges().bounds()
        self._ph_lo, self._ph_hi = torch.tensor(plo), torch.tensor(phi)
        self.synthesizer: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        with scoped_rng(derive_seed(cfg.seed, "scene-terse-init"), self.device):
            if cfg.synthesizer == "terse":
                if synthesizer is None:
                    synthesizer = SceneSynthesizer(
                        ranges=self.param_ranges,
                        photometric=cfg.photometric_ranges.to_photometric_ranges() if cfg.photometric else None,
                        num_objects=cfg.num_objects,
                        channels=tuple(cfg.s_channels),
                        branch_channels=cfg.s_branch_channels,
                        input_size=(cfg.s_input_size, cfg.s_input_size),
                        dropout=cfg.s_dropout,
                        noise_dim=cfg.s_noise_dim,
                    )
                    if cfg.s_noise_dim:  # stochastic S starts at the random sampler's centre
                        zero_last_linear(synthesizer.regressor)
                self.synthesizer = synthesizer.to(self.device)
                if cfg.discriminator:
                    self.discriminator = (discriminator if discriminator is not None else PatchDiscriminator(3, width=cfg.d_width)).to(self.device)
        self.opt_s = torch.optim.Adam(self.synthesizer.parameters(), lr=cfg.lr_s, weight_decay=cfg.s_weight_decay) if self.synthesizer is not None else None
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999)) if self.discriminator is not None else None
        self.target.model.to(self.device)
        self.scenes: list[SyntheticScene] = []
        self.history: list[dict[str, Any]] = []
        self.completed_cycles = 0
        self.counters = {"s": 0, "d": 0}
        self.last_generation: dict[str, int] = {}
        # the teacher (objective "teacher"): a frozen copy, never trained by a gradient (EMA only)
        self.teacher = make_teacher(self.target, teacher) if cfg.objective == "teacher" else None
        if self.teacher is not None:
            self.teacher.model.to(self.device)
        self.s_buffer: list[dict[str, torch.Tensor]] = []  # S snapshots (s_replay)
        self._s_scratch: nn.Module | None = None

    # ------------------------------------------------------------------ sampling and rendering

    def _uniform_affine(self, g: torch.Generator, n: int) -> list[list[float]]:
        """Random cut-paste placements: every parameter uniform in its range, except that ``sy``
        follows ``sx`` (clamped into its range), so cut-outs keep their aspect ratio as far as the
        ranges allow (Cut-Paste-Learn scales uniformly)."""
        p = _uniform(g, self._aff_lo, self._aff_hi, (n,))
        p[:, 5] = p[:, 4].clamp(float(self._aff_lo[5]), float(self._aff_hi[5]))
        return p.tolist()

    def sample_layout(self, g: torch.Generator, cycle: int = 0, random: bool = False) -> SceneParams:
        """Everything random about a composite except S's outputs: background, foregrounds, blend,
        artefact; with ``synthesizer="random"`` (or ``random``) also the placements (and photometrics)."""
        cfg = self.config
        k = cfg.num_objects
        bg = self.backgrounds.sample_one(self.canvas, g)
        index = torch.randint(len(self.foregrounds), (k,), generator=g).tolist()
        blend = BlendSpec(cfg.blend_modes[int(torch.randint(len(cfg.blend_modes), (), generator=g))])
        artefacts, other = [], None
        if cfg.artefacts:
            other = self.backgrounds.sample_one(self.canvas, g)
            shape_index = int(torch.randint(len(self.foregrounds), (), generator=g))
            artefacts = [ArtefactParams(shape_index, self._uniform_affine(g, 1)[0], blend)]
        objects = [ObjectParams(int(i), self._fg_categories[int(i)], [], photometric=None, blend=blend, cleanup=cfg.cleanup) for i in index]
        if cfg.synthesizer == "terse" and not random:
            for o, u in zip(objects, torch.rand(k, 2, generator=g, dtype=torch.float64).tolist()):
                o.anchor = [float(v) for v in u]
        else:
            for o, a in zip(objects, self._uniform_affine(g, k)):
                o.affine = a
            if cfg.photometric:
                ph = _uniform(g, self._ph_lo, self._ph_hi, (k,))
                for o, v in zip(objects, to_color_params(ph).tolist()):
                    o.photometric = v
        return SceneParams(
            canvas=self.canvas, background=bg, objects=objects, artefacts=artefacts, artefact_background=other,
            frame=CutoutFrame(cfg.fg_size, cfg.fg_fill, cfg.cleanup_sigma, cfg.cleanup_mu), min_visibility=cfg.min_visibility,
            meta={"cycle": int(cycle)},
        )  # fmt: skip

    def _synth_inputs(self, layouts: Sequence[SceneParams]) -> tuple[torch.Tensor, torch.Tensor]:
        """S's inputs: RGBA cut-outs ``(B, K, 4, s, s)`` and the canvases with artefacts ``(B, 3, H, W)``."""
        rgb, alpha = cutouts(layouts, self.foregrounds)
        return torch.cat([rgb, alpha], 2).to(self.device), canvas_batch(layouts, self.foregrounds, self.backgrounds, device=self.device)

    def _place(
        self, layouts: Sequence[SceneParams], canvas: torch.Tensor, rgba: torch.Tensor, noise: torch.Tensor | None = None, synth: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """S's (or ``synth``'s) placements ``(B, K, 6)`` and photometrics ``(B, K, 4)`` (or None), differentiable."""
        synth = synth if synth is not None else self.synthesizer
        assert synth is not None
        out = synth(rgba, canvas, noise=noise)
        photo = to_color_params(out["photometric"]) if "photometric" in out else None
        # translation relative to a random anchor per object (see the module docstring): at raw
        # output 0 an object sits at its anchor, and S moves it anywhere inside the range
        u = torch.tensor([[o.anchor for o in p.objects] for p in layouts], dtype=out["raw"].dtype, device=self.device)
        u = u.clamp(ANCHOR_EPS, 1.0 - ANCHOR_EPS)
        lo = self._aff_lo[1:3].to(self.device, out["raw"].dtype)
        hi = self._aff_hi[1:3].to(self.device, out["raw"].dtype)
        t = torch.lerp(lo, hi, torch.sigmoid(torch.logit(u) + out["raw"][..., 1:3]))
        params = torch.cat([out["params"][..., :1], t, out["params"][..., 3:]], -1)
        return (tie_aspect(params) if self.constraints is not None else params), photo

    def _noise(self, g: torch.Generator, b: int) -> torch.Tensor | None:
        """Stochastic S's noise ``(b, s_noise_dim)`` from ``g`` (nothing drawn without it)."""
        d = self.config.s_noise_dim
        return torch.randn(b, d, generator=g).to(self.device) if d else None

    def composite(self, layouts: Sequence[SceneParams], affine: torch.Tensor | None = None, photometric: torch.Tensor | None = None) -> SceneComposite:
        """Render ``layouts`` (with ``affine``/``photometric`` overriding their numbers) as one batch."""
        return composite_batch(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photometric, device=self.device)[1]

    def _targets(self, comp: SceneComposite, layouts: Sequence[SceneParams]) -> list[dict[str, torch.Tensor]]:
        return [{k: v.to(self.device) for k, v in _labels(comp, i, p, self.label_map)[0].items()} for i, p in enumerate(layouts)]

    def _frozen(self, *modules: nn.Module | None) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for m in modules:
            if m is not None:
                stack.enter_context(freeze(m))
        return stack

    def _bound(self, loss_t: torch.Tensor) -> torch.Tensor:
        tau = self.config.s_loss_bound
        return loss_t if tau is None else tau * torch.tanh(loss_t / tau)

    # ------------------------------------------------------------------ single steps

    def _next_step(self, counter: str, stream: str) -> tuple[int, torch.Generator]:
        """The step number of ``counter`` (advanced) and the generator of that step's draws."""
        step = self.counters[counter]
        self.counters[counter] += 1
        return step, make_generator(self.config.seed, stream, step)

    def s_step(self) -> dict[str, float]:
        """One S step on ``batch_size`` random fg/bg pairs, T and D frozen (see the module docstring).

        Returns ``loss_s`` (minimised), ``loss_t`` (T's loss on the composites), ``loss_adv`` (with D),
        ``objects`` (labelled objects per composite) and ``skipped`` (1 when the loss was not finite).
        """
        if self.synthesizer is None or self.opt_s is None:
            raise InputError("there is no synthesizer to train (synthesizer='random')", field="synthesizer")
        cfg = self.config
        step, g = self._next_step("s", "S-pairs")
        layouts = [self.sample_layout(g, self.completed_cycles + 1) for _ in range(cfg.batch_size)]
        noise = self._noise(g, cfg.batch_size)
        rgba, canvas = self._synth_inputs(layouts)
        out: dict[str, float] = {}
        with scoped_rng(derive_seed(cfg.seed, "S-dropout", step), self.device), self._frozen(self.target.model, self.discriminator):
            self.synthesizer.train()
            affine, photo = self._place(layouts, canvas, rgba, noise)
            comp = composite_batch(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photo, canvas_in=canvas, device=self.device)[1]
            targets = self._targets(comp, layouts)
            loss_t = self.target.loss(comp.image, targets)
            loss = -self._bound(loss_t)
            if self.teacher is not None:  # the teacher must still detect the objects: its loss is a penalty (gradient to S only)
                loss_teacher = self.teacher.loss(comp.image, targets)
                loss = loss + cfg.teacher_weight * self._bound(loss_teacher)
                out["loss_teacher"] = float(loss_teacher.detach())
            if self.discriminator is not None:
                adv = g_loss(self.discriminator(comp.image))
                loss = loss + cfg.adv_weight * adv
                out["loss_adv"] = float(adv.detach())
            out.update(loss_s=float(loss.detach()), loss_t=float(loss_t.detach()), objects=sum(int(t["labels"].numel()) for t in targets) / len(targets))
            self.opt_s.zero_grad(set_to_none=True)
            out["skipped"] = 0.0 if finite_backward(loss, self.synthesizer) else 1.0  # NaN/inf loss or gradient: no update
            if not out["skipped"]:
                self.opt_s.step()
        return out

    def _fake_batch(self, g: torch.Generator, n: int, dropout_seed: int) -> torch.Tensor:
        """``n`` composites of the frozen S (or random placements), no gradient."""
        layouts = [self.sample_layout(g, self.completed_cycles + 1) for _ in range(n)]
        with torch.no_grad():
            if self.synthesizer is None:
                return self.composite(layouts).image
            noise = self._noise(g, n)
            rgba, canvas = self._synth_inputs(layouts)
            with scoped_rng(dropout_seed, self.device), self._generation_mode():
                affine, photo = self._place(layouts, canvas, rgba, noise)
            return composite_batch(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photo, canvas_in=canvas, device=self.device)[1].image

    def d_step(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> dict[str, float]:
        """One D step: ``real`` images vs ``fake`` composites (both ``(B, 3, H, W)``; by default
        ``batch_size`` random real images and composites of the frozen S). Returns ``loss_d``."""
        if self.discriminator is None or self.opt_d is None:
            raise InputError("the discriminator is off (discriminator: true with synthesizer: terse)", field="discriminator")
        cfg = self.config
        step, g = self._next_step("d", "D")
        if real is None:
            real = self.real_images[torch.randint(self.real_images.shape[0], (cfg.batch_size,), generator=g)]
        if fake is None:
            fake = self._fake_batch(g, cfg.batch_size, derive_seed(cfg.seed, "D-dropout", step))
        self.discriminator.train()
        loss = d_loss(self.discriminator(real.to(self.device)), self.discriminator(fake.detach().to(self.device)))
        self.opt_d.zero_grad(set_to_none=True)
        check_step(loss, self.discriminator, step=step, what="discriminator")
        self.opt_d.step()
        return {"loss_d": float(loss.detach())}

    @contextlib.contextmanager
    def _generation_mode(self, synth: nn.Module | None = None):
        """S in ``eval()`` (BatchNorm running statistics) with its dropout layers active; restored after."""
        s = synth if synth is not None else self.synthesizer
        if s is None:
            yield
            return
        saved = [(m, m.training) for m in s.modules()]
        try:
            s.eval()
            for m in s.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
            yield
        finally:
            for m, flag in saved:
                m.training = flag

    def generate(self, n: int, *, keep: str | None = None, generator: torch.Generator | None = None) -> list[SyntheticScene]:
        """Generate composites and keep up to ``n`` (``keep`` ``"hard"`` or ``"all"``, default the
        config's), trying at most ``max_candidates_per_cycle``; ``mix_random`` of the ``n`` come from
        plain random paste (kept without the hardness filter). ``self.last_generation`` then holds
        ``tried``, ``scored`` (with labelled objects), ``hard``, ``kept`` and ``dropped_overlaps``."""
        cfg = self.config
        keep = keep or cfg.keep
        if keep not in ("hard", "all"):
            raise InputError(f"keep must be 'hard' or 'all', got {keep!r}", field="keep")
        cycle = self.completed_cycles + 1
        g = generator if generator is not None else make_generator(cfg.seed, "generate", cycle)
        n_random = round(cfg.mix_random * n) if self.synthesizer is not None else 0
        stats = {"tried": 0, "scored": 0, "hard": 0, "kept": 0, "dropped_overlaps": 0}
        kept = self._generate(n - n_random, keep, g, cycle, self.synthesizer is None, cfg.max_candidates_per_cycle - n_random, stats)
        if n_random:
            kept += self._generate(n_random, "all", g, cycle, True, n_random, stats)
        self.last_generation = stats
        return kept

    def plausible(self, p: SceneParams) -> SceneParams:
        """``p`` with the objects that overlap more than the real set allows dropped (constraints on)."""
        if self.constraints is None:
            return p
        p, dropped = drop_overlaps(p, self.foregrounds, self.backgrounds, self.constraints.max_iou)
        p.meta["dropped_overlaps"] = dropped
        return p

    def _generate(self, n: int, keep: str, g: torch.Generator, cycle: int, random: bool, cap: int, stats: dict[str, int]) -> list[SyntheticScene]:
        cfg = self.config
        kept: list[SyntheticScene] = []
        tried = 0
        while len(kept) < n and tried < cap:
            b = min(cfg.batch_size, cap - tried)
            canvas = None
            if random:
                layouts = [
                    worst_of_k_layout(self, g, cycle) if cfg.worst_of_k > 1 else self.plausible(self.sample_layout(g, cycle, random=True)) for _ in range(b)
                ]
            else:
                layouts = [self.sample_layout(g, cycle) for _ in range(b)]
                dropout_seed = int(torch.randint(0, 2**62, (), generator=g))
                noise = self._noise(g, b)
                synth, j = pick_synth(self, g)
                with torch.no_grad():
                    rgba, canvas = self._synth_inputs(layouts)
                    with scoped_rng(dropout_seed, self.device), self._generation_mode(synth):
                        affine, photo = self._place(layouts, canvas, rgba, noise, synth)
                for i, p in enumerate(layouts):
                    for k, o in enumerate(p.objects):
                        o.affine = affine[i, k].detach().cpu().tolist()
                        if photo is not None:
                            o.photometric = photo[i, k].detach().cpu().tolist()
                    if cfg.s_replay:
                        p.meta["s_snapshot"] = j
                layouts = [self.plausible(p) for p in layouts]  # the canvas (background + artefact) does not depend on the objects
            # the canvases S saw are reused on the CPU only (replay renders on the CPU)
            reuse = canvas is not None and self.device.type == "cpu"
            # one scene at a time, through replay's code, so a kept scene replays bit-identically
            rendered = [
                _composite_scene(p, self.foregrounds, self.backgrounds, self.label_map, canvas[i : i + 1] if reuse else None) for i, p in enumerate(layouts)
            ]
            has = [i for i, s in enumerate(rendered) if s.target["labels"].numel()]
            conf: dict[int, torch.Tensor] = {}
            if has:
                images = torch.stack([rendered[i].image for i in has]).to(self.device)
                tgts = [{k: v.to(self.device) for k, v in rendered[i].target.items()} for i in has]
                with self._frozen(self.target.model), torch.no_grad():
                    for i, c in zip(has, self.target.confidence(images, tgts)):
                        conf[i] = c.detach().float().cpu()
            for i, scene in enumerate(rendered):
                tried += 1
                stats["tried"] += 1
                stats["dropped_overlaps"] += int(scene.params.meta.get("dropped_overlaps", 0))
                if i in conf:
                    stats["scored"] += 1
                    is_hard = is_hard_from_confidence(conf[i], cfg.hard_threshold)
                    stats["hard"] += int(is_hard)
                    if keep == "all" or is_hard:
                        scene.confidence = conf[i]
                        scene.params.meta["confidence"] = [float(v) for v in conf[i].tolist()]
                        scene.params.meta["index"] = stats["tried"] - 1
                        kept.append(scene)
                if len(kept) >= n:
                    break
        stats["kept"] += len(kept)
        return kept

    # ------------------------------------------------------------------ phases

    def _d_steps(self) -> int:
        cfg = self.config
        if cfg.d_steps is not None:
            return cfg.d_steps
        return cfg.t_epochs * math.ceil(self.real_images.shape[0] / cfg.batch_size)

    def cycle(self, progress: Progress | None = None) -> dict[str, Any]:
        """One A.2 cycle: S steps (T, D frozen) -> generate and keep -> T epochs at ``real_ratio``
        -> D steps (S frozen). Appends the kept scenes and the cycle's record; returns the record."""
        cfg = self.config
        cycle = self.completed_cycles + 1
        record: dict[str, Any] = {"cycle": cycle}
        t0 = time.perf_counter()
        rows = []
        if self.synthesizer is not None:
            for i in range(cfg.s_steps):
                rows.append(self.s_step())
                if progress is not None:
                    progress(f"cycle {cycle}: synthesizer", i + 1, cfg.s_steps)
        t1 = time.perf_counter()
        new = self.generate(cfg.hard_per_cycle, generator=make_generator(cfg.seed, "generate", cycle))
        t2 = time.perf_counter()
        self.scenes.extend(new)
        gen = self.last_generation
        if cfg.s_replay and self.synthesizer is not None:  # this cycle's S joins the buffer (the oldest leaves)
            self.s_buffer = [*self.s_buffer, snapshot(self.synthesizer)][-cfg.s_replay :]
        if progress is not None:
            progress(f"cycle {cycle}: generation", gen["kept"], cfg.hard_per_cycle)
        syn_images = torch.stack([s.image for s in self.scenes]) if self.scenes else None
        syn_targets = [s.target for s in self.scenes] if self.scenes else None
        t_progress = (lambda step, total, loss: progress(f"cycle {cycle}: target", step, total)) if progress is not None else None
        self.target.model.train()  # train_detector leaves the mode to the caller (BatchNorm statistics)
        log = train_detector(
            self.target,
            self.real_images,
            self.real_targets,
            synthetic_images=syn_images,
            synthetic_targets=syn_targets,
            ratio=cfg.real_ratio,
            epochs=cfg.t_epochs,
            batch_size=cfg.t_batch_size,
            lr=cfg.lr_t,
            augment=cfg.t_augment,
            seed=derive_seed(cfg.seed, "T", cycle),
            progress=t_progress,
        )
        self.target.model.eval()
        if self.teacher is not None and cfg.teacher == "ema":
            ema_update(self.teacher.model, self.target.model, cfg.teacher_ema)
        t3 = time.perf_counter()
        d_rows = []
        if self.discriminator is not None:
            n_d = self._d_steps()
            for i in range(n_d):
                d_rows.append(self.d_step())
                if progress is not None:
                    progress(f"cycle {cycle}: discriminator", i + 1, n_d)
        t4 = time.perf_counter()
        record.update(
            s_steps=len(rows),
            s_loss=_mean(rows, "loss_s"),
            s_target_loss=_mean(rows, "loss_t"),
            s_adv_loss=_mean(rows, "loss_adv"),
            s_teacher_loss=_mean(rows, "loss_teacher"),
            dropped_overlaps=gen["dropped_overlaps"] if self.constraints is not None else None,
            s_objects_per_image=_mean(rows, "objects"),
            s_skipped=int(sum(r.get("skipped", 0.0) for r in rows)),
            candidates_tried=gen["tried"],
            candidates_scored=gen["scored"],
            candidates_hard=gen["hard"],
            hard_fraction=gen["hard"] / gen["scored"] if gen["scored"] else None,
            kept=gen["kept"],
            kept_total=len(self.scenes),
            kept_objects=sum(int(s.target["labels"].numel()) for s in new),
            t_loss=log.epoch_losses[-1] if log.epoch_losses else None,
            t_steps=log.steps,
            d_steps=len(d_rows),
            d_loss=_mean(d_rows, "loss_d"),
            s_seconds=t1 - t0,
            generate_seconds=t2 - t1,
            t_seconds=t3 - t2,
            d_seconds=t4 - t3,
        )
        record = {k: v for k, v in record.items() if v is not None}
        self.history.append(record)
        self.completed_cycles = cycle
        return record

    # ------------------------------------------------------------------ checkpoints and the run

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (model and optimiser states, history, kept scenes' params, counters)."""
        state: dict[str, Any] = {
            "cycle": self.completed_cycles,
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "target": self.target.model.state_dict(),
            "history": json.dumps(self.history),
            "scenes": json.dumps([s.params.to_dict() for s in self.scenes]),
            "counters": dict(self.counters),
        }
        if self.synthesizer is not None and self.opt_s is not None:
            state.update(synthesizer=self.synthesizer.state_dict(), opt_s=self.opt_s.state_dict())
        if self.discriminator is not None and self.opt_d is not None:
            state.update(discriminator=self.discriminator.state_dict(), opt_d=self.opt_d.state_dict())
        if self.teacher is not None:
            state["teacher"] = self.teacher.model.state_dict()
        if self.s_buffer:
            state["s_buffer"] = list(self.s_buffer)
        return state

    def load_state(self, state: Mapping[str, Any], path: Path | None = None) -> None:
        """Restore from :meth:`state_dict` (kept scenes are replayed from their params).

        Raises:
            InputError: the checkpoint was made with another configuration (``cycles`` may differ).
        """
        saved = json.loads(state["config"])
        check_same_config(saved, self.config.to_dict(), ignore=("cycles",), file=path)  # more cycles extend a run
        self.target.model.load_state_dict(state["target"])
        if self.synthesizer is not None and self.opt_s is not None:
            self.synthesizer.load_state_dict(state["synthesizer"])
            self.opt_s.load_state_dict(state["opt_s"])
        if self.discriminator is not None and self.opt_d is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        if self.teacher is not None:
            self.teacher.model.load_state_dict(state["teacher"])
        self.s_buffer = list(state.get("s_buffer", []))
        self.history = json.loads(state["history"])
        self.counters = {k: int(v) for k, v in state["counters"].items()}
        self.completed_cycles = int(state["cycle"])
        self.scenes = [replay_scene(p, self.foregrounds, self.backgrounds, self.label_map) for p in json.loads(state["scenes"])]

    def run(
        self,
        out_dir: str | Path | None = None,
        *,
        resume: bool = False,
        progress: Progress | None = None,
        max_cycles: int | None = None,
    ) -> SceneTerseResult:
        """Run cycles until ``config.cycles`` are done (or ``max_cycles`` in total, to stop early).

        With ``out_dir``: ``config.yaml``, and after every cycle ``checkpoint.pt``, ``history.json``
        and ``scenes.json`` (all written atomically). ``resume=True`` continues from the checkpoint.

        Raises:
            InputError: ``out_dir`` already holds a checkpoint and ``resume`` is false; the
                checkpoint has another configuration; ``resume`` without ``out_dir``.
        """
        cfg = self.config
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            ckpt = out / "checkpoint.pt"
            if ckpt.is_file():
                if not resume:
                    raise InputError("the run folder already holds a checkpoint; resume it or choose another folder", file=ckpt)
                self.load_state(load_checkpoint(ckpt, map_location=self.device), ckpt)
            atomic_write_text(out / "config.yaml", cfg.to_yaml())
        elif resume:
            raise InputError("resuming needs a run folder", field="out_dir")
        stop = cfg.cycles if max_cycles is None else min(cfg.cycles, max_cycles)
        while self.completed_cycles < stop:
            try:
                self.cycle(progress)
            except NonFiniteError as exc:  # stop: checkpoint.pt still holds the last good cycle
                if out is not None:
                    record_event(out, exc.event, cycle=self.completed_cycles + 1, action="stopped; resume continues from the last checkpoint")
                raise
            if out is not None:
                save_checkpoint(out / "checkpoint.pt", self.state_dict())
                atomic_write_json(out / "history.json", self.history)
                atomic_write_json(out / "scenes.json", [s.params.to_dict() for s in self.scenes], indent=None)
        return SceneTerseResult(list(self.scenes), list(self.history), self.completed_cycles, out)


__all__ = ["SceneTerse", "SceneTerseResult", "SyntheticScene", "replay_scene", "write_synthetic_coco"]
