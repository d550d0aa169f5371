"""MrGAN: two stacked CycleGANs.

Stage 1 is a CycleGAN between synthetic ``S`` and real ``R``; it gives refined synthetic
``RS = G1(S)`` and refined real ``RR = F1(R)``. Stage 2 is a second CycleGAN between one of
``RR <-> RS`` (``"rr_rs"``), ``R <-> RS`` (``"r_rs"``) or ``RR <-> S`` (``"rr_s"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Unpack

import torch
from pydantic import Field

from synthloop.config import Config
from synthloop.errors import InputError
from synthloop.loops.refine.common import Domain, Pair, StepLoop, TrainerOptions
from synthloop.loops.refine.cyclegan import CycleGANConfig, CycleGANTrainer
from synthloop.loops.refine.divergence import DivergenceEvent
from synthloop.utils.seeding import derive_seed


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


class MrGANTrainer(StepLoop):
    """MrGAN: two stacked CycleGANs (see the module docstring for the stage-2 modes).

    Stage 1 trains until done; then the whole synthetic and real sets are mapped through it
    (``RS = G1(S)``, ``RR = F1(R)``, labels and masks carried over) and stage 2 trains on the
    pair chosen by ``stage2_mode``. Losses are prefixed ``stage1/`` or ``stage2/``.

    After training, :meth:`refine` maps synthetic images into the space stage 2 targets, and
    :meth:`map_real` maps real images into that same space (identity for ``r_rs``, ``F1`` for
    the modes whose target is ``RR``), which is where a classifier trained on the refined
    images should be tested.

    Args:
        cfg: both stages' hyper-parameters and the stage-2 mode.
        synthetic, real: the two domains.
        seed: each stage derives its own seed from it.
        batch_size: chunk size when mapping whole sets through a stage.
        options: ``device``, ``divergence``, ``label_aligned`` (:class:`TrainerOptions`), for both stages.
    """

    method = "mrgan"

    def __init__(
        self,
        cfg: MrGANConfig,
        synthetic: Domain,
        real: Domain,
        *,
        seed: int = 0,
        batch_size: int = 256,
        **options: Unpack[TrainerOptions],
    ):
        self.cfg = cfg
        self.seed = int(seed)
        self.synthetic = synthetic
        self.real = real
        self.batch_size = batch_size
        self.stage1 = CycleGANTrainer(cfg.stage1, synthetic, real, seed=derive_seed(seed, "mrgan", "stage1"), name="mrgan/stage1", **options)
        self.device = self.stage1.device
        self.options: TrainerOptions = {**options, "device": self.device}  # what stage 2 shares with stage 1
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
            self.cfg.stage2, source, target, seed=derive_seed(self.seed, "mrgan", "stage2"), name=f"mrgan/stage2[{self.cfg.stage2_mode}]", **self.options
        )
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
