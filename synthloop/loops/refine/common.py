"""What the refiners share: model-size configs, domains, pairing, the history pool, the step loop.

Label-aligned pairs (MrGAN appendix 5): when both sides have labels, every synthetic sample of
class ``c`` in a batch is paired with a real sample of class ``c`` (:class:`PairSampler`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import torch
from pydantic import Field
from torch import nn

from synthloop.config import Config
from synthloop.data.folders import ImageFolder, ImageStack
from synthloop.errors import InputError
from synthloop.loops.refine.divergence import DivergenceConfig, DivergenceEvent, DivergenceMonitor
from synthloop.models.discriminator import PatchDiscriminator
from synthloop.models.refiners import init_gan_weights
from synthloop.models.targets import freeze
from synthloop.utils.seeding import make_generator

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


class ClassifierConfig(Config):
    """:class:`~synthloop.models.refiners.SmallResNet` size (MrGAN appendix 3: 16-32-64, 3 blocks)."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = Field(3, ge=1)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass
class Domain(ImageStack):
    """One side of a translation: images, optional labels and foreground masks (``len``,
    ``channels`` and ``size`` as for an :class:`~synthloop.data.folders.ImageFolder`).

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


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def to_floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
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


class StepLoop(abc.ABC):
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


class TrainerOptions(TypedDict, total=False):
    """The keywords every trainer takes (defaults in :class:`TrainerBase`): ``seed`` derives every
    random generator, ``device`` is where the networks run, ``divergence`` the divergence detection
    settings, ``label_aligned`` pairs same-class samples when both domains are labelled."""

    seed: int
    device: str | torch.device
    divergence: DivergenceConfig | None
    label_aligned: bool


class TrainerBase(StepLoop):
    """State shared by the trainers: models, optimisers, random generators, step, history."""

    method = ""

    def __init__(
        self, cfg: Any, synthetic: Domain, real: Domain, *, name: str,
        seed: int = 0, device: str | torch.device = "cpu", divergence: DivergenceConfig | None = None, label_aligned: bool = True,
    ):  # fmt: skip
        self.seed = int(seed)
        self.label_aligned = label_aligned
        self.device = resolve_device(device)
        self.name = name
        self.monitor = DivergenceMonitor(divergence, source=name)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.rngs: dict[str, torch.Generator] = {}
        self.pools: dict[str, ImagePool] = {}
        check_compatible(synthetic, real)
        self.cfg = cfg
        self.synthetic = synthetic
        self.real = real

    def _rng(self, *keys: object) -> torch.Generator:
        return make_generator(self.seed, self.method, *keys)

    def _discriminator(self, key: str) -> PatchDiscriminator:
        """A PatchGAN sized by ``cfg.discriminator``, initialised from the generator ``key``, on the device."""
        dc = self.cfg.discriminator
        d = PatchDiscriminator(self.synthetic.channels, width=dc.width, init_std=dc.init_std)
        return init_gan_weights(d, dc.init_std, self._rng(key)).to(self.device)

    def _start_sampling(self) -> None:
        """Set up the pair sampler and the noise generator (both saved in checkpoints)."""
        self.sampler = PairSampler(self.synthetic, self.real, label_aligned=self.label_aligned, generator=self._rng("sampler"))
        self.noise_rng = self._rng("noise")
        self.rngs = {"sampler": self.sampler.generator, "noise": self.noise_rng}

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
