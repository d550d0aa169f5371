"""The ``synthloop refine`` job: read folders, train a refiner with periodic checkpoints, write
the refined folder, measure label preservation and foreground IoU (:func:`run_refine`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field

from synthloop.config import Config, threads_field
from synthloop.data.folders import ImageFolder, check_same_classes, read_image_folder, write_image_folder
from synthloop.errors import InputError
from synthloop.jobs import run_folder
from synthloop.loops.refine.checkpoint import Trainer, load_refiner_checkpoint, save_refiner_checkpoint
from synthloop.loops.refine.common import ClassifierConfig, Domain, resolve_device
from synthloop.loops.refine.cyclegan import CycleGANConfig, CycleGANTrainer
from synthloop.loops.refine.divergence import DivergenceConfig, DivergenceError
from synthloop.loops.refine.mrgan import MrGANConfig, MrGANTrainer
from synthloop.loops.refine.pixelda import PixelDAConfig, PixelDATrainer
from synthloop.loops.training import train_classifier
from synthloop.metrics.classification import accuracy
from synthloop.metrics.refinement import foreground_iou, label_preservation, label_preservation_per_class
from synthloop.models.refiners import SmallResNet
from synthloop.utils.atomic import atomic_write_json, atomic_write_text, remove_stray_temps
from synthloop.utils.records import check_same_config
from synthloop.utils.seeding import make_generator


class RefineDataConfig(Config):
    """Input folders (one subfolder per class, or images directly inside for unlabelled data)."""

    synthetic: Path
    real: Path
    synthetic_masks: Path | None = None
    real_masks: Path | None = None
    channels: Literal[1, 3] | None = None
    label_aligned: bool = True


class EvaluationConfig(Config):
    """Label preservation (needs labels on both sides) and foreground IoU after training.

    The reference classifier is a :class:`~synthloop.models.refiners.SmallResNet` trained on the
    real images (for MrGAN, on the real images mapped into the refined space) with Adam.
    """

    enabled: bool = True
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    classifier_steps: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    iou_threshold: float = 0.5
    refined_iou_threshold: float | None = None


class RefineConfig(Config):
    """Everything ``synthloop refine`` needs. Only the section named by ``method`` is used."""

    method: Literal["cyclegan", "mrgan", "pixelda"] = "cyclegan"
    seed: int = 0
    device: str = "auto"
    data: RefineDataConfig
    cyclegan: CycleGANConfig = Field(default_factory=CycleGANConfig)
    mrgan: MrGANConfig = Field(default_factory=MrGANConfig)
    pixelda: PixelDAConfig = Field(default_factory=PixelDAConfig)
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(100, ge=1)
    refine_batch_size: int = Field(256, ge=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    threads: int | None = threads_field()

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``config.yaml`` and the checkpoint: without ``threads`` (``run.json`` records it)."""
        d = super().to_dict()
        d.pop("threads", None)
        return d


# keys that may change between a run and its resumption (they do not affect training)
RESUMABLE_KEYS: tuple[str, ...] = ("device", "checkpoint_every", "log_every", "refine_batch_size", "evaluation", "threads")


def build_trainer(cfg: RefineConfig, synthetic: Domain, real: Domain, *, num_classes: int | None = None) -> Trainer:
    """The trainer ``cfg.method`` names, for these domains."""
    common = dict(seed=cfg.seed, device=cfg.device, divergence=cfg.divergence, label_aligned=cfg.data.label_aligned)
    if cfg.method == "cyclegan":
        return CycleGANTrainer(cfg.cyclegan, synthetic, real, **common)  # type: ignore[arg-type]
    if cfg.method == "mrgan":
        return MrGANTrainer(cfg.mrgan, synthetic, real, batch_size=cfg.refine_batch_size, **common)  # type: ignore[arg-type]
    return PixelDATrainer(cfg.pixelda, synthetic, real, num_classes=num_classes, **common)  # type: ignore[arg-type]


def _write_logs(out: Path, trainer: Trainer) -> None:
    atomic_write_json(out / "losses.json", trainer.history)
    atomic_write_json(out / "events.json", [e.to_dict() for e in trainer.events])


def _evaluate(cfg: RefineConfig, trainer: Trainer, synthetic: ImageFolder, real: ImageFolder, refined: torch.Tensor) -> dict[str, Any]:
    ev = cfg.evaluation
    ious = foreground_iou(synthetic.images, refined, threshold=ev.iou_threshold, refined_threshold=ev.refined_iou_threshold, input_masks=synthetic.masks)
    metrics: dict[str, Any] = {
        "foreground_iou": float(ious.mean()),
        "foreground_iou_threshold": ev.iou_threshold,
        "foreground_iou_from_masks": synthetic.masks is not None,
    }
    if synthetic.labels is None or real.labels is None or len(real.classes) < 2:
        metrics["label_preservation"] = None
        metrics["label_preservation_skipped"] = "needs labelled real and synthetic folders with at least two classes"
        return metrics
    num_classes = len(real.classes)
    reference_images = trainer.map_real(real.images) if isinstance(trainer, MrGANTrainer) else real.images
    device = resolve_device(cfg.device)
    init = make_generator(cfg.seed, "evaluation", "init")
    clf = SmallResNet(num_classes, real.channels, ev.classifier.widths, ev.classifier.blocks_per_stage, generator=init).to(device)
    batches = make_generator(cfg.seed, "evaluation", "batches")
    train_classifier(clf, reference_images, real.labels, steps=ev.classifier_steps, batch_size=ev.batch_size, lr=ev.lr, generator=batches)
    per_class = label_preservation_per_class(clf, refined, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation"] = label_preservation(clf, refined, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation_unrefined"] = label_preservation(clf, synthetic.images, synthetic.labels, num_classes=num_classes)
    metrics["label_preservation_per_class"] = {c: (None if math.isnan(v) else v) for c, v in zip(real.classes, per_class.tolist())}
    metrics["reference_classifier_train_accuracy"] = accuracy(clf, reference_images, real.labels, num_classes=num_classes)
    metrics["reference_classifier_steps"] = ev.classifier_steps
    if isinstance(trainer, PixelDATrainer):
        metrics["pixelda_task_accuracy_real"] = accuracy(trainer.t, real.images, real.labels, num_classes=trainer.num_classes)
    return metrics


def run_refine(cfg: RefineConfig, out_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the configured refiner and write its results to ``out_dir``.

    Output: ``config.yaml``; ``checkpoint.pt`` (every ``checkpoint_every`` steps and at the end);
    ``losses.json`` (one dict per step) and ``events.json`` (divergence events), rewritten with
    each checkpoint; then ``refined/`` (every synthetic image refined, same relative paths,
    PNG), for MrGAN modes with a refined-real target also ``real_mapped/``; and ``metrics.json``.
    Every file is written atomically.

    Args:
        cfg: the run.
        out_dir: output folder; it must not hold a checkpoint unless ``resume``.
        resume: continue from ``out_dir/checkpoint.pt`` (the training part of the config must
            match the one it was written with).
        log: receives progress lines.

    Returns:
        the metrics written to ``metrics.json``.

    Raises:
        InputError: bad folders or config, a checkpoint that exists without ``resume`` (or is
            missing with it), or a config that differs from the checkpoint's.
        DivergenceError: training diverged and ``divergence.action`` is ``"raise"`` (the last
            checkpoint and ``events.json`` are kept).
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    existed = out.is_dir()
    with run_folder.lock(out):
        remove_stray_temps(out)  # a killed run's half-written checkpoint or logs
        ckpt = out / "checkpoint.pt"
        if ckpt.exists() and not resume:
            raise InputError("output folder already holds a checkpoint; pass --resume to continue it, or choose another folder", file=out)
        if resume and not ckpt.exists():
            if not existed:
                raise InputError("nothing to resume: no checkpoint.pt in the output folder", file=out)
            if (out / "config.yaml").is_file():  # killed before its first checkpoint: start again, same config
                check_same_config(yaml.safe_load((out / "config.yaml").read_text()), cfg.to_dict(), ignore=RESUMABLE_KEYS, file=out / "config.yaml")
            say("no checkpoint yet (the run was stopped before its first one): starting from step 0")
            resume = False

        d = cfg.data
        synthetic = read_image_folder(d.synthetic, channels=d.channels, masks=d.synthetic_masks, what="synthetic")
        real = read_image_folder(d.real, channels=d.channels, masks=d.real_masks, what="real")
        check_same_classes(real, synthetic)
        syn_domain = Domain.from_folder(synthetic, name=f"synthetic folder {d.synthetic}")
        real_domain = Domain.from_folder(real, name=f"real folder {d.real}")
        trainer = build_trainer(cfg, syn_domain, real_domain, num_classes=len(synthetic.classes) or None)
        cfg_dict = cfg.to_dict()

        if resume:
            saved = load_refiner_checkpoint(ckpt, trainer)
            if saved is not None:
                check_same_config(saved, cfg_dict, ignore=RESUMABLE_KEYS, file=ckpt)
            say(f"resumed {cfg.method} at step {trainer.step}/{trainer.total_steps}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", cfg.to_yaml())
            say(f"training {cfg.method}: {len(synthetic)} synthetic, {len(real)} real images, {trainer.total_steps} steps")
        previous = run_folder.read_record(out) if resume else None
        record = run_folder.start_record(out, seed=cfg.seed, previous=previous, method=cfg.method, device=str(cfg.device))

        try:
            while not trainer.done:
                losses = trainer.train_step()
                step = trainer.step
                if step % cfg.log_every == 0 or trainer.done:
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items() if "total" in k or k.endswith("batch_std"))
                    say(f"step {step}/{trainer.total_steps}: {shown}")
                if step % cfg.checkpoint_every == 0 or trainer.done:
                    save_refiner_checkpoint(ckpt, trainer, cfg_dict)
                    _write_logs(out, trainer)
        except DivergenceError:
            _write_logs(out, trainer)
            raise

        _write_logs(out, trainer)
        refined = trainer.refine(synthetic.images, batch_size=cfg.refine_batch_size).clamp_(0, 1)
        write_image_folder(out / "refined", refined, synthetic.files)
        if isinstance(trainer, MrGANTrainer) and cfg.mrgan.stage2_mode != "r_rs":
            write_image_folder(out / "real_mapped", trainer.map_real(real.images).clamp_(0, 1), real.files)
        metrics: dict[str, Any] = {"method": cfg.method, "steps": trainer.step, "num_synthetic": len(synthetic), "num_real": len(real)}
        metrics["divergence_events"] = len(trainer.events)
        if cfg.evaluation.enabled:
            metrics.update(_evaluate(cfg, trainer, synthetic, real, refined))
        atomic_write_json(out / "metrics.json", metrics)
        run_folder.finish_record(out, record)
        say(f"wrote {len(synthetic)} refined images to {out / 'refined'}")
        return metrics
