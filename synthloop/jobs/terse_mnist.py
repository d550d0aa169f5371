"""``synthloop terse-train``: the TERSE classification loop on the built-in MNIST, from a config.

The target (``mnist_classifier`` or ``mnist_classifier_deep``) is first trained on padded 40x40
MNIST for ``base_epochs`` (TERSE 3.2: T starts from a baseline), then the loop runs in ``out``
with checkpoints after every cycle, so ``resume=True`` continues a killed run exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from synthloop.config import Config, threads_field
from synthloop.data.mnist import load_mnist, mnist_padded
from synthloop.errors import InputError
from synthloop.experiments.affnist import affnist_test_set, subset_digits, train_baseline
from synthloop.jobs import run_folder
from synthloop.loops.terse_classification import TerseClassificationConfig, TerseClassificationLoop, TerseRunResult
from synthloop.loops.training import scoped_rng, train_reference_classifier
from synthloop.metrics.classification import accuracy
from synthloop.models.registry import create_model
from synthloop.report.plots import write_cache_grid
from synthloop.utils.atomic import atomic_write_text, remove_stray_temps
from synthloop.utils.progress import Progress
from synthloop.utils.seeding import derive_seed


class TerseMnistConfig(Config):
    """What ``synthloop terse-train`` runs: data, target, baseline, and the loop's settings."""

    target: Literal["mnist_classifier", "mnist_classifier_deep"] = "mnist_classifier"
    train_digits: int | None = Field(None, ge=10, description="MNIST training digits used (None = all 50,000)")
    test_digits: int | None = Field(2_000, ge=10, description="digits of the AffNIST-style test set evaluated after each cycle")
    base_epochs: int = Field(3, ge=0, description="baseline epochs on padded MNIST before the loop")
    base_lr: float = Field(1e-2, gt=0.0)
    reference_epochs: int = Field(0, ge=0, description="epochs of the clean reference classifier (0 = no degenerate-sample check)")
    loop: TerseClassificationConfig = TerseClassificationConfig()
    threads: int | None = threads_field()

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``terse_mnist.yaml``: without ``threads`` (``run.json`` records it)."""
        d = super().to_dict()
        d.pop("threads", None)
        return d


def run_terse_mnist(
    config: TerseMnistConfig,
    out: str | Path,
    *,
    resume: bool = False,
    max_cycles: int | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> TerseRunResult:
    """Train the baseline (skipped when resuming from a checkpoint), then run the loop in ``out``.

    ``out`` also gets ``run.json`` (seed, version, commit, torch threads, start / resume / finish
    times), written only once the data and models were checked: a run stopped by bad input leaves
    no files behind.
    """
    cfg = config
    device = torch.device(device)
    out = Path(out)
    seed = cfg.loop.seed
    with run_folder.lock(out):
        ckpt = out / "checkpoint.pt"
        if ckpt.is_file() and not resume:  # refused before the baseline trains and before run.json is replaced
            raise InputError("the run folder already holds a checkpoint; resume it (--resume) or choose another folder", file=ckpt)
        remove_stray_temps(out)  # a killed run's half-written checkpoint, history or caches
        x, y = load_mnist("train")
        x, y = subset_digits(x, y, cfg.train_digits, seed, "train")
        x, y = mnist_padded(x).to(device), y.to(device)
        tx, ty = load_mnist("test")
        tx, ty = subset_digits(tx, ty, cfg.test_digits, seed, "test")
        test = affnist_test_set(mnist_padded(tx).to(device), seed)
        ty = ty.to(device)
        with scoped_rng(derive_seed(seed, "baseline", "init"), device):
            target = create_model(cfg.target).to(device)
        resuming = resume and ckpt.is_file()
        if cfg.base_epochs and not resuming:  # a resumed run loads T from its checkpoint
            train_baseline(
                target,
                x,
                y,
                epochs=cfg.base_epochs,
                batch_size=cfg.loop.t_batch_size,
                lr=cfg.base_lr,
                momentum=cfg.loop.t_momentum,
                seed=seed,
                progress=progress,
            )
        reference = None
        if cfg.reference_epochs:
            reference = train_reference_classifier(x, y, epochs=cfg.reference_epochs, seed=seed, device=device, progress=progress)
        loop = TerseClassificationLoop(cfg.loop, target, x, y, reference=reference, device=device, run_dir=out)

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            return {"test_acc": accuracy(model, test, ty, num_classes=cfg.loop.num_classes, batch_size=cfg.loop.eval_batch_size)}

        # everything was checked (bad data fail above, before anything is written): the run starts
        record = run_folder.start_record(out, seed=seed, previous=run_folder.read_record(out) if resume else None, device=str(device))
        atomic_write_text(out / "terse_mnist.yaml", cfg.to_yaml())
        result = loop.run(resume=resume, max_cycles=max_cycles, evaluate=evaluate, progress=progress, on_cycle=write_cache_grid)
        run_folder.finish_record(out, record, completed_cycles=result.completed_cycles, all_cycles_done=result.finished)
        return result
