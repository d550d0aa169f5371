"""A learned generator policy (Learning to Simulate, Ruiz et al. 2019; Meta-Sim; VADRA): a
distribution over the random paste generator's parameters, moved by the task's reward.

**Space.** :mod:`synthloop.loops.policy_space`: object scale (centre, width), objects per scene,
position spread, rotation range, brightness/contrast widths, blend-mode logits (and background
logits when the bank has several sources), each bounded and normalised to ``[0, 1]``.

**Policy and optimiser: the cross-entropy method (CEM).** The policy is a diagonal Gaussian over the
normalised vector, its mean starting at the random sampler's defaults
(:meth:`~synthloop.loops.policy_space.PolicySpace.default_vector`). Each iteration draws
``population`` candidates (mirrored pairs ``mean +- std * eps``, clipped to the box so every
sample respects the bounds), scores each with the reward, and moves the mean and std toward the
``elite`` best candidates with smoothing ``alpha``: ``mean <- (1 - alpha) mean + alpha mean(elite)``,
the same for the std (floored at ``min_std``). Why CEM and not REINFORCE with a baseline: the
budget allows ~10-30 reward evaluations in all, each a short fine-tune whose reward is noisy (AP
on a 150-image val subset). REINFORCE's gradient estimate at that count is dominated by noise and
needs a learning rate tuned to the reward's scale; CEM only uses the *ranking* of the candidates
within an iteration (invariant to the reward's scale and offset, and exactly what common random
numbers make reliable), and a small elite with smoothing is the usual robust choice at this
budget. Mirrored sampling cancels the first-order noise of the mean's update.

**Reward** (:class:`FinetuneReward`): a copy of the detector (the fixed start point: the baseline
the final fine-tune starts from) is fine-tuned for one short pass on ``real_per_finetune`` real
images + ``synthetic_per_finetune`` scenes of the candidate setting, at the loop's real:synthetic
ratio through the exact-ratio sampler, and scored on a fixed, seeded subset of the real
validation split; the reward is the score minus the start point's score on that subset. The
score is ``(AP50 + AP80) / 2``: AP80 is the benchmark's headline, but on 150 images it is the
noisiest of the AP values, and averaging with AP50 halves that noise while still rewarding
localisation. Common random numbers: within an iteration every candidate gets the same real
images in the same batch order, the same val subset, the same fine-tune seed and the same
generator stream for its scenes (so candidates differ only by their setting).

**Scenes** are SceneTerse's (``synthesizer: random``, ``keep: all``) under the setting's config
(:func:`~synthloop.loops.policy_space.apply_setting`): no second compositor, every scene keeps its
``SceneParams`` (replayed exactly by :func:`~synthloop.loops.terse_detection_scenes.replay_scene`).

**Run folder** (:func:`search` with ``out_dir``): ``policy_search.json`` (the policy state and the
history, written atomically after every iteration: a rerun resumes after the last finished one) and
``search_scenes/iter_<i>.json`` (every candidate's scenes' params).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthloop.config import Config
from synthloop.data.dataset import Dataset
from synthloop.errors import InputError
from synthloop.loops.detection_training import evaluate_detector, train_detector
from synthloop.loops.policy_space import PolicySpace, apply_setting
from synthloop.loops.terse_detection import SceneTerse
from synthloop.loops.terse_detection_config import SceneTerseConfig
from synthloop.models.detection import DetectionTarget
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.seeding import derive_seed, make_generator

Reward = Callable[[dict[str, Any], int, int], tuple[float, dict[str, Any]]]
"""``reward(setting, iteration, candidate) -> (reward, info)``; candidates of one iteration should share their random numbers."""


class CEMConfig(Config):
    """The search's size and CEM's constants (see the module docstring)."""

    iterations: int = 2
    population: int = 4
    elite: int = 2
    alpha: float = 0.7
    init_std: float = 0.2
    min_std: float = 0.05
    seed: int = 0


class CEMPolicy:
    """A diagonal Gaussian over ``space``'s normalised box, updated by the cross-entropy method."""

    def __init__(self, space: PolicySpace, config: CEMConfig | None = None, *, mean: torch.Tensor | None = None):
        self.space = space
        self.config = cfg = config or CEMConfig()
        if not (1 <= cfg.elite <= cfg.population) or cfg.population < 2:
            raise InputError(f"need 2 <= population and 1 <= elite <= population, got {cfg.population}, {cfg.elite}", field="elite")
        if not (0.0 < cfg.alpha <= 1.0 and 0.0 < cfg.min_std <= cfg.init_std):
            raise InputError(f"need 0 < alpha <= 1 and 0 < min_std <= init_std, got {cfg.alpha}, {cfg.min_std}, {cfg.init_std}", field="alpha")
        self.mean = (space.default_vector() if mean is None else mean.to(torch.float64)).clone()
        self.std = torch.full((len(space),), float(cfg.init_std), dtype=torch.float64)

    def ask(self, iteration: int) -> torch.Tensor:
        """``(population, d)`` candidates in ``[0, 1]^d``: mirrored pairs from a generator derived from ``(seed, iteration)``."""
        P, d = self.config.population, len(self.space)
        eps = torch.randn((P + 1) // 2, d, generator=make_generator(self.config.seed, "policy-ask", iteration), dtype=torch.float64)
        eps = torch.cat([eps, -eps])[:P]
        return (self.mean + self.std * eps).clamp(0.0, 1.0)

    def tell(self, candidates: torch.Tensor, rewards: Sequence[float]) -> list[int]:
        """Move toward the elite of ``candidates``; returns the elite's indices (best first; ties by index)."""
        if len(rewards) != candidates.shape[0]:
            raise InputError(f"{len(rewards)} rewards for {candidates.shape[0]} candidates", field="rewards")
        order = sorted(range(len(rewards)), key=lambda i: (-float(rewards[i]), i))
        elite = order[: self.config.elite]
        e = candidates[elite]
        a = self.config.alpha
        self.mean = (1 - a) * self.mean + a * e.mean(0)
        spread = e.std(0, unbiased=False) if len(elite) > 1 else torch.zeros_like(self.std)
        self.std = ((1 - a) * self.std + a * spread).clamp(min=self.config.min_std)
        return elite

    def snapshot(self) -> dict[str, Any]:
        """The policy now: per parameter the mean and std in its units, and normalised (``mean_u``, ``std_u``)."""
        span = (self.space.high - self.space.low).tolist()
        mean_x = self.space.denormalise(self.mean).tolist()
        return {
            "mean": {n: round(v, 5) for n, v in zip(self.space.names, mean_x)},
            "std": {n: round(s * w, 5) for n, s, w in zip(self.space.names, self.std.tolist(), span)},
            "mean_u": {n: round(v, 5) for n, v in zip(self.space.names, self.mean.tolist())},
            "std_u": {n: round(v, 5) for n, v in zip(self.space.names, self.std.tolist())},
            "setting": self.space.decode(self.mean),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)
        self.std = torch.tensor(state["std"], dtype=torch.float64)


@dataclass
class SearchResult:
    """What :func:`search` leaves: the per-iteration history, the final policy, reward calls and seconds."""

    history: list[dict[str, Any]]
    final: dict[str, Any]
    evaluations: int
    seconds: float


def search(policy: CEMPolicy, reward: Reward, *, out_dir: str | Path | None = None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Run ``policy.config.iterations`` CEM iterations of ``reward``. Each history record holds the
    policy the candidates were drawn from (``policy``), the candidates (setting, reward, info), the
    elite's indices, the updated policy (``updated``) and the seconds. With ``out_dir``, resumes
    after the last iteration saved there (same space and CEM config but ``iterations``, else ``InputError``)."""
    out = Path(out_dir) if out_dir is not None else None
    state_path = out / "policy_search.json" if out is not None else None
    ident = {"space": policy.space.to_dict(), "cem": {k: v for k, v in policy.config.to_dict().items() if k != "iterations"}}  # more iterations extend a search
    history: list[dict[str, Any]] = []
    if state_path is not None and state_path.is_file():
        doc = json.loads(state_path.read_text())
        if doc.get("ident") != ident:
            raise InputError("the folder holds a policy search with another space or CEM config; choose another folder", file=state_path)
        history = doc["history"]
        policy.load_state(doc["state"])
    t_start = time.perf_counter()
    for it in range(len(history), policy.config.iterations):
        t0 = time.perf_counter()
        before = policy.snapshot()
        cands = policy.ask(it)
        rows, scenes = [], []
        for j, u in enumerate(cands):
            setting = policy.space.decode(u)
            tc = time.perf_counter()
            r, info = reward(setting, it, j)
            scenes.append(info.pop("scenes", []))
            rows.append(
                {
                    "setting": setting,
                    "u": [round(v, 5) for v in u.tolist()],
                    "reward": round(float(r), 5),
                    **info,
                    "seconds": round(time.perf_counter() - tc, 2),
                }
            )
            if log is not None:
                log(f"policy iteration {it + 1} candidate {j + 1}/{len(cands)}: reward {float(r):+.4f}")
        elite = policy.tell(cands, [row["reward"] for row in rows])
        history.append(
            {
                "iteration": it + 1,
                "policy": before,
                "candidates": rows,
                "elite": elite,
                "updated": policy.snapshot(),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        if out is not None and state_path is not None:
            atomic_write_json(out / "search_scenes" / f"iter_{it + 1}.json", scenes, indent=None)
            atomic_write_json(state_path, {"ident": ident, "state": policy.state_dict(), "history": history})
    evaluations = sum(len(h["candidates"]) for h in history)
    return SearchResult(history, policy.snapshot(), evaluations, time.perf_counter() - t_start)


def _subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    """A fixed, seeded subset of ``n`` images of ``dataset`` (in their original order)."""
    if n >= len(dataset.images):
        return dataset
    pick = sorted(torch.randperm(len(dataset.images), generator=make_generator(seed, "policy-val-subset"))[:n].tolist())
    return Dataset(dataset.root, dataset.categories, [dataset.images[i] for i in pick], dict(dataset.info))


def score(ap: Mapping[str, float]) -> float:
    """The reward's score: ``(AP50 + AP80) / 2`` (see the module docstring)."""
    return 0.5 * (float(ap["ap50"]) + float(ap["ap80"]))


class FinetuneReward:
    """The validation-AP gain of a short fine-tune on real + the candidate setting's scenes.

    Args:
        base: the loop config candidates override (e.g. the random paste row's ``loop_config``);
            its ``lr_t``, ``t_batch_size``, ``real_ratio`` and ``seed`` set the fine-tune.
        space: the policy's space.
        target: the start point (copied for every candidate, never trained itself).
        real_images, real_targets: the real training set the fine-tune samples from.
        foregrounds, backgrounds: the banks (as for :class:`~synthloop.loops.terse_detection.SceneTerse`).
        val: the real validation split; ``val_images`` of it (fixed, seeded) score every candidate.
        real_per_finetune, synthetic_per_finetune: images of each part per fine-tune (one pass over the real part).
    """

    def __init__(
        self,
        base: SceneTerseConfig,
        space: PolicySpace,
        target: DetectionTarget,
        real_images: torch.Tensor,
        real_targets: Sequence[Mapping[str, torch.Tensor]],
        foregrounds: Any,
        backgrounds: Any,
        val: Dataset,
        *,
        val_images: int = 150,
        real_per_finetune: int = 48,
        synthetic_per_finetune: int = 48,
        eval_batch_size: int = 32,
    ):
        if real_per_finetune < 1 or synthetic_per_finetune < 1:
            raise InputError("a fine-tune needs at least one real and one synthetic image", field="real_per_finetune")
        self.base, self.space, self.target = base, space, target
        self.real_images, self.real_targets = real_images, list(real_targets)
        self.foregrounds, self.backgrounds = foregrounds, backgrounds
        self.val = _subset(val, val_images, base.seed)
        self.n_real = min(int(real_per_finetune), real_images.shape[0])
        self.n_syn = int(synthetic_per_finetune)
        self.eval_batch_size = eval_batch_size
        self.start_ap = evaluate_detector(target, self.val, batch_size=eval_batch_size)
        self.start = score(self.start_ap)
        self.finetunes = 0
        self.seconds = 0.0

    def scenes(self, setting: Mapping[str, Any], iteration: int, target: DetectionTarget) -> list[Any]:
        """The setting's scenes, drawn from the iteration's generator stream (common to its candidates)."""
        cfg = apply_setting(self.base, self.space, setting)
        loop = SceneTerse(cfg, target, self.real_images, self.real_targets, self.foregrounds, self.space.backgrounds(setting, self.backgrounds))
        return loop.generate(self.n_syn, keep="all", generator=make_generator(self.base.seed, "policy-scenes", iteration))

    def __call__(self, setting: dict[str, Any], iteration: int, candidate: int) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        cfg = self.base
        target = DetectionTarget(copy.deepcopy(self.target.model), self.target.label_map)
        scenes = self.scenes(setting, iteration, target)
        if not scenes:
            raise InputError("the candidate setting produced no labelled scene", field="setting")
        pick = sorted(torch.randperm(self.real_images.shape[0], generator=make_generator(cfg.seed, "policy-real", iteration))[: self.n_real].tolist())
        train_detector(
            target,
            self.real_images[pick],
            [self.real_targets[i] for i in pick],
            synthetic_images=torch.stack([s.image for s in scenes]),
            synthetic_targets=[s.target for s in scenes],
            ratio=cfg.real_ratio,
            epochs=1,
            batch_size=cfg.t_batch_size,
            lr=cfg.lr_t,
            augment=cfg.t_augment,
            seed=derive_seed(cfg.seed, "policy-finetune", iteration),
        )
        ap = evaluate_detector(target, self.val, batch_size=self.eval_batch_size)
        self.finetunes += 1
        self.seconds += time.perf_counter() - t0
        info = {
            "ap50": round(float(ap["ap50"]), 4),
            "ap80": round(float(ap["ap80"]), 4),
            "synthetic_images": len(scenes),
            "objects": sum(int(s.target["labels"].numel()) for s in scenes),
            "scenes": [s.params.to_dict() for s in scenes],
        }
        return score(ap) - self.start, info


__all__ = ["CEMConfig", "CEMPolicy", "FinetuneReward", "Reward", "SearchResult", "score", "search"]
