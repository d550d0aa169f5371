"""PixelDA (Bousmalis et al. 2017): a refiner trained with a discriminator and a task classifier.

Generator ``G(x, z)``, discriminator ``D`` (standard GAN loss), and a task classifier ``T``
trained alongside on refined (and source) images; the generator minimises
``alpha * L_domain + beta * L_task + gamma * L_content`` where ``L_content`` is PixelDA's masked
pairwise MSE (:func:`~synthloop.functional.losses.masked_pmse`).
"""

from __future__ import annotations

from typing import Literal, Unpack

import torch
import torch.nn.functional as F
from pydantic import Field

from synthloop.config import Config
from synthloop.errors import InputError
from synthloop.functional.losses import d_loss, g_loss, masked_pmse
from synthloop.loops.refine.common import (
    ClassifierConfig, DiscriminatorConfig, Domain, Pair, TrainerBase, TrainerOptions, apply_model, set_requires_grad, to_floats,
)  # fmt: skip
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.refiners import PixelDAGenerator, SmallResNet


class PixelDAGeneratorConfig(Config):
    """:class:`~synthloop.models.refiners.PixelDAGenerator` size (paper: 64 channels, 6 blocks)."""

    noise_dim: int = Field(10, ge=1)
    base_channels: int = Field(32, ge=1)
    n_blocks: int = Field(3, ge=0)
    norm: Literal["instance", "batch", "none"] = "batch"
    init_std: float = Field(0.02, gt=0)


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


class PixelDATrainer(TrainerBase):
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
        name: prefix of divergence messages.
        options: ``seed``, ``device``, ``divergence``, ``label_aligned`` (:class:`TrainerOptions`).

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
        name: str = "pixelda",
        **options: Unpack[TrainerOptions],
    ):
        super().__init__(cfg, synthetic, real, name=name, **options)
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
        c = synthetic.channels
        gc, cc = cfg.generator, cfg.classifier
        self.g = PixelDAGenerator(
            c, c, synthetic.size, gc.noise_dim, gc.base_channels, gc.n_blocks, gc.norm, gc.init_std, generator=self._rng("g")
        ).to(self.device)
        self.d = self._discriminator("d")
        self.t = SmallResNet(self.num_classes, c, cc.widths, cc.blocks_per_stage, generator=self._rng("t")).to(self.device)
        guard_strided_1x1_convs(self.t)
        self.models = {"g": self.g, "d": self.d, "t": self.t}
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_t = torch.optim.Adam(self.t.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.optimizers = {"g": self.opt_g, "d": self.opt_d, "t": self.opt_t}
        self._start_sampling()

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
        out = {**to_floats(dt), "batch_std": std, "lr": lr, "t_acc_refined": float((logits_fake.argmax(1) == ys).float().mean())}
        if not self.monitor.check_losses(self.step, dt):
            return self._finish_step(out)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_t.zero_grad(set_to_none=True)
        dt["dt_total"].backward()
        if not self.monitor.check_grads(self.step, self.opt_d, self.opt_t):
            return self._finish_step(out)
        self.opt_d.step()
        self.opt_t.step()

        # G, with D and T fixed
        set_requires_grad((self.d, self.t), False)
        try:
            fake = self.g(xs, z)
            gt = {
                "g_adv": g_loss(self.d(fake)),
                "g_task": F.cross_entropy(self.t(fake), ys),
                "g_content": masked_pmse(fake, xs, ms),
            }
            gt["g_total"] = cfg.alpha * gt["g_adv"] + cfg.beta * gt["g_task"] + cfg.gamma * gt["g_content"]
            out.update(to_floats(gt))
            if self.monitor.check_losses(self.step, gt):
                self.opt_g.zero_grad(set_to_none=True)
                gt["g_total"].backward()
                if self.monitor.check_grads(self.step, self.opt_g):
                    self.opt_g.step()
        finally:
            set_requires_grad((self.d, self.t), True)
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
