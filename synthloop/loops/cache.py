"""The hard-example cache of the TERSE classification loop (supplementary A.1).

While the synthesizer trains, every synthesized sample the frozen target finds hard is offered
to the cache; it keeps the first ``per_class`` of each class and is *full* when every class has
``per_class``. With each image it keeps what is needed to replay it exactly: the index of the
source digit and the ``(6,)`` affine parameters (``angle, tx, ty, shear, sx, sy``) the
synthesizer produced, plus the target's hardness ``1 - p(true class)`` at the time.

On disk a cache is one ``.npz`` (float32 images, so a reloaded cache is bit-identical) written
atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthloop.compose.batch import paste_batch
from synthloop.errors import InputError
from synthloop.functional.geometry import AFFINE_PARAM_NAMES
from synthloop.utils.atomic import atomic_open

_FIELDS = ("images", "labels", "params", "source_index", "hardness")


def _stored(key: str, doc: str) -> property:
    """A read-only view of one stored field (all samples, in storage order)."""
    return property(lambda self: self._field(key), doc=doc)


def render_digits(digits: torch.Tensor, params: torch.Tensor, canvas: tuple[int, int] | None = None) -> torch.Tensor:
    """Paste white digits shaped by ``digits`` ``Tensor[B, 1, h, w]`` onto black ``canvas`` (default
    the digits' own size) with ``params`` ``Tensor[B, 6]`` -> ``Tensor[B, 1, H, W]`` in [0, 1].

    This is :func:`synthloop.compose.batch.paste_batch` with a white foreground, the digit as its
    alpha and a black background, so the composite equals the warped digit (what the AffNIST
    recipe renders) and stays differentiable in ``params``.
    """
    size = tuple(canvas) if canvas is not None else tuple(digits.shape[-2:])
    bg = digits.new_zeros(digits.shape[0], digits.shape[1], size[0], size[1])
    return paste_batch(torch.ones_like(digits), digits, bg, params).image


CACHE_POLICIES: tuple[str, ...] = ("first", "latest")


class HardExampleCache:
    """Class-balanced store of synthesized samples: at most ``per_class`` of each of ``num_classes``.

    ``policy`` says which samples a full class keeps: ``"first"`` (the paper's cache: the first
    ``per_class`` offered; later ones are refused) or ``"latest"`` (the most recent ``per_class``:
    older ones are dropped, so the cache follows a synthesizer that keeps training).
    Tensors live on ``device``; :meth:`add` is vectorised (no loop over samples).

    Raises:
        InputError: ``num_classes < 1``, ``per_class < 1`` or an unknown policy.
    """

    def __init__(self, num_classes: int, per_class: int, *, policy: str = "first", device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}", field="num_classes")
        if per_class < 1:
            raise InputError(f"a cache must hold at least one sample per class, got per_class={per_class}", field="per_class")
        if policy not in CACHE_POLICIES:
            raise InputError(f"unknown cache policy {policy!r}; expected one of {', '.join(CACHE_POLICIES)}", field="policy")
        self.num_classes = num_classes
        self.per_class = per_class
        self.policy = policy
        self.device = torch.device(device)
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=self.device)
        self._chunks: dict[str, list[torch.Tensor]] = {k: [] for k in _FIELDS}

    def __len__(self) -> int:
        return int(self.counts.sum())

    @property
    def capacity(self) -> int:
        return self.num_classes * self.per_class

    @property
    def full(self) -> bool:
        """Whether every class holds ``per_class`` samples."""
        return bool((self.counts >= self.per_class).all())

    def class_full(self) -> torch.Tensor:
        """``Tensor[num_classes]`` bool: which classes are full."""
        return self.counts >= self.per_class

    def add(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        params: torch.Tensor,
        source_index: torch.Tensor,
        hardness: torch.Tensor,
        accept: torch.Tensor | None = None,
    ) -> int:
        """Offer a batch; keep (in batch order) the accepted samples of classes that still have room.

        Args:
            images: ``Tensor[B, C, H, W]``.
            labels: ``Tensor[B]`` integer classes.
            params: ``Tensor[B, 6]`` affine parameters of each sample.
            source_index: ``Tensor[B]`` index of each sample's source digit.
            hardness: ``Tensor[B]`` ``1 - p(true class)`` under the target.
            accept: ``Tensor[B]`` bool, e.g. the hard-example test (default: all).
        Returns:
            How many samples were stored.
        """
        b = images.shape[0]
        if labels.shape != (b,) or params.shape != (b, len(AFFINE_PARAM_NAMES)) or source_index.shape != (b,) or hardness.shape != (b,):
            raise ValueError(
                f"cache.add: inconsistent shapes images {tuple(images.shape)}, labels {tuple(labels.shape)}, "
                f"params {tuple(params.shape)}, source_index {tuple(source_index.shape)}, hardness {tuple(hardness.shape)}"
            )
        labels = labels.to(self.device, torch.int64)
        keep = torch.ones(b, dtype=torch.bool, device=self.device) if accept is None else accept.to(self.device, torch.bool)
        if self.policy == "first":
            # rank of each offered sample among the kept samples of its class, in batch order
            onehot = F.one_hot(labels, self.num_classes) * keep.unsqueeze(1)
            rank = (onehot.cumsum(0) * onehot).sum(1) - 1
            room = (self.per_class - self.counts).clamp_min(0)
            take = keep & (rank < room[labels])
        else:
            take = keep
        n = int(take.sum())
        if n == 0:
            return 0
        values = (images, labels, params, source_index, hardness)
        for key, value in zip(_FIELDS, values):
            self._chunks[key].append(value.detach().to(self.device)[take])
        if self.policy == "first":
            self.counts += torch.bincount(labels[take], minlength=self.num_classes)
        else:
            self._keep_latest()
        return n

    def _keep_latest(self) -> None:
        """Drop all but the most recent ``per_class`` samples of each class."""
        labels = self._field("labels")
        onehot = F.one_hot(labels, self.num_classes)
        later = (onehot.flip(0).cumsum(0).flip(0) * onehot).sum(1) - 1  # same-class samples after each one
        keep = later < self.per_class
        if not bool(keep.all()):
            for key in _FIELDS:
                self._chunks[key] = [self._field(key)[keep]]
        self.counts = torch.bincount(self._field("labels"), minlength=self.num_classes)

    def _field(self, key: str) -> torch.Tensor:
        chunks = self._chunks[key]
        if not chunks:
            raise InputError("the hard-example cache is empty: no sample has been stored", field="cache")
        if len(chunks) > 1:  # consolidate so repeated reads do not re-concatenate
            self._chunks[key] = [torch.cat(chunks)]
        return self._chunks[key][0]

    images = _stored("images", "``Tensor[N, C, H, W]`` stored images (raises :class:`InputError` when empty).")
    labels = _stored("labels", "``Tensor[N]`` int64 labels.")
    params = _stored("params", "``Tensor[N, 6]`` affine parameters, columns in ``AFFINE_PARAM_NAMES`` order.")
    source_index = _stored("source_index", "``Tensor[N]`` int64 index of each sample's source digit.")
    hardness = _stored("hardness", "``Tensor[N]`` ``1 - p(true class)`` under the target when the sample was mined.")

    def replay(self, digits: torch.Tensor) -> torch.Tensor:
        """Re-render every stored sample from the source ``digits`` ``Tensor[M, 1, h, w]`` (the same
        set the loop synthesized from) and the stored parameters -> ``Tensor[N, 1, H, W]``."""
        src = digits[self.source_index.to(digits.device)]
        return render_digits(src, self.params.to(digits.device, digits.dtype), tuple(self.images.shape[-2:]))

    def state_dict(self) -> dict[str, object]:
        state: dict[str, object] = {"num_classes": self.num_classes, "per_class": self.per_class, "policy": self.policy, "counts": self.counts.cpu()}
        for key in _FIELDS:
            state[key] = self._field(key).cpu() if self._chunks[key] else None
        return state

    @classmethod
    def from_state_dict(cls, state: dict, *, device: torch.device | str = "cpu") -> "HardExampleCache":
        cache = cls(int(state["num_classes"]), int(state["per_class"]), policy=str(state.get("policy", "first")), device=device)
        cache.counts = torch.as_tensor(state["counts"], dtype=torch.int64).to(cache.device).clone()
        if state.get("images") is not None:
            for key in _FIELDS:
                cache._chunks[key] = [torch.as_tensor(state[key]).to(cache.device)]
        return cache

    def save(self, path: str | Path) -> Path:
        """Write the cache as ``.npz`` atomically: ``images`` float32 ``(N, C, H, W)``, ``labels``,
        ``params`` ``(N, 6)`` with ``param_names``, ``source_index``, ``hardness``, ``per_class``.

        Raises:
            InputError: the cache is empty.
        """
        path = Path(path)
        arrays = {key: self._field(key).cpu().numpy() for key in _FIELDS}
        arrays["param_names"] = np.array(AFFINE_PARAM_NAMES)
        arrays["num_classes"] = np.array(self.num_classes)
        arrays["per_class"] = np.array(self.per_class)
        arrays["policy"] = np.array(self.policy)
        with atomic_open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> "HardExampleCache":
        """Read a cache written by :meth:`save`.

        Raises:
            InputError: the file is missing, unreadable, lacks a field, or holds no samples.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("file not found", file=path)
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in (*_FIELDS, "param_names", "num_classes", "per_class")}
                policy = z["policy"] if "policy" in z.files else "first"
        except KeyError as exc:
            raise InputError(f"missing array {exc.args[0]!r}", file=path, field=str(exc.args[0])) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npz: {exc}", file=path) from None
        if tuple(str(n) for n in data["param_names"]) != AFFINE_PARAM_NAMES:
            raise InputError(f"expected {list(AFFINE_PARAM_NAMES)}, got {data['param_names'].tolist()}", file=path, field="param_names")
        n = data["labels"].shape[0]
        if n == 0:
            raise InputError("the cache holds no samples", file=path, field="labels")
        for key in _FIELDS:
            if data[key].shape[0] != n:
                raise InputError(f"has {data[key].shape[0]} rows but labels has {n}", file=path, field=key)
        state = {key: torch.from_numpy(data[key]) for key in _FIELDS}
        labels = state["labels"].long()
        num_classes = int(data["num_classes"])
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise InputError(f"labels outside [0, {num_classes})", file=path, field="labels")
        state.update(num_classes=num_classes, per_class=int(data["per_class"]), policy=str(policy), counts=torch.bincount(labels, minlength=num_classes))
        return cls.from_state_dict(state, device=device)
