"""CycleGAN between a synthetic and a real domain, with MrGAN's and Wang et al.'s extras as options.

Two ResNet generators (synthetic -> real ``G``, real -> synthetic ``F``) and two PatchGAN
discriminators with least-squares (LSGAN) losses, cycle consistency ``lambda_cycle = 10``, an
optional identity loss (``0.5 * lambda_cycle``) and CycleGAN's history pool of 50 fakes. MrGAN's
extras are options: several generator updates per discriminator update, label smoothing and
flipping for D, L1 to the input, and pre-training the generators (L1 to the input) and the
discriminators before the adversarial phase. With foreground masks, Wang et al.'s separate
losses are added: cycle L1 on the background and a hue (grey: intensity) loss on the foreground.
"""

from __future__ import annotations

import itertools
from typing import Unpack

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from synthloop.config import Config
from synthloop.errors import InputError
from synthloop.functional.losses import background_l1, foreground_hue_l1, lsgan_loss
from synthloop.loops.refine.common import (
    DiscriminatorConfig, Domain, GeneratorConfig, ImagePool, Pair, TrainerBase, TrainerOptions, apply_model, set_requires_grad, to_floats,
)  # fmt: skip
from synthloop.models.refiners import ResnetGenerator


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


class CycleGANTrainer(TrainerBase):
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
        name: prefix of divergence messages.
        options: ``seed``, ``device``, ``divergence``, ``label_aligned`` (:class:`TrainerOptions`).
    """

    method = "cyclegan"

    def __init__(
        self,
        cfg: CycleGANConfig,
        synthetic: Domain,
        real: Domain,
        *,
        name: str = "cyclegan",
        **options: Unpack[TrainerOptions],
    ):
        super().__init__(cfg, synthetic, real, name=name, **options)
        k = 2**cfg.generator.n_downsample
        h, w = synthetic.size
        if h % k or w % k:
            raise InputError(
                f"images are {w}x{h}; with generator.n_downsample={cfg.generator.n_downsample} both sides must be multiples of {k}",
                field="generator.n_downsample",
            )
        c = synthetic.channels
        gc = cfg.generator

        def gen(key: str) -> ResnetGenerator:
            return ResnetGenerator(c, c, gc.base_channels, gc.n_downsample, gc.n_blocks, gc.norm, gc.init_std, generator=self._rng(key))

        self.g_s2r = gen("g_s2r").to(self.device)
        self.g_r2s = gen("g_r2s").to(self.device)
        self.d_real = self._discriminator("d_real")
        self.d_syn = self._discriminator("d_syn")
        self.models = {"g_s2r": self.g_s2r, "g_r2s": self.g_r2s, "d_real": self.d_real, "d_syn": self.d_syn}
        self.opt_g = torch.optim.Adam(itertools.chain(self.g_s2r.parameters(), self.g_r2s.parameters()), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(itertools.chain(self.d_real.parameters(), self.d_syn.parameters()), lr=cfg.lr_d, betas=cfg.betas)
        self.optimizers = {"g": self.opt_g, "d": self.opt_d}
        self._start_sampling()
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
        if self.monitor.check_grads(self.step, opt):
            opt.step()

    def _step_pretrain_g(self) -> dict[str, float]:
        self._set_lr(1.0)
        (xs, _), (xr, _) = self._sample()
        terms = {"pretrain_l1_s2r": F.l1_loss(self.g_s2r(xs), xs), "pretrain_l1_r2s": F.l1_loss(self.g_r2s(xr), xr)}
        terms["g_total"] = terms["pretrain_l1_s2r"] + terms["pretrain_l1_r2s"]
        if self.monitor.check_losses(self.step, terms):
            self._update(self.opt_g, terms["g_total"])
        return to_floats(terms)

    def _step_pretrain_d(self) -> dict[str, float]:
        self._set_lr(1.0)
        (xs, _), (xr, _) = self._sample()
        with torch.no_grad():
            fake_r, fake_s = self.g_s2r(xs), self.g_r2s(xr)
        terms = self._d_terms(xs, xr, fake_r, fake_s)
        terms["d_total"] = terms["d_real"] + terms["d_syn"]
        if self.monitor.check_losses(self.step, terms):
            self._update(self.opt_d, terms["d_total"])
        return to_floats(terms)

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
        set_requires_grad(discs, False)
        try:
            for i in range(cfg.g_updates_per_step):
                (xs, ms), (xr, mr) = self._sample()
                terms, fake_r, fake_s = self._generator_terms(xs, ms, xr, mr)
                if i == 0:  # once per step, so ``patience`` counts steps
                    std = self.monitor.check_outputs(self.step, fake_r)
                logs.append(to_floats(terms))
                if not self.monitor.check_losses(self.step, terms):
                    return {**logs[-1], "batch_std": std}
                self._update(self.opt_g, terms["g_total"])
        finally:
            set_requires_grad(discs, True)
        g_mean = {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}
        fr = self.pool_real.query(fake_r, self.noise_rng)
        fs = self.pool_syn.query(fake_s, self.noise_rng)
        d_terms = self._d_terms(xs, xr, fr, fs)
        d_terms["d_total"] = d_terms["d_real"] + d_terms["d_syn"]
        out = {**g_mean, **to_floats(d_terms), "batch_std": std, "lr_factor": factor}
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
