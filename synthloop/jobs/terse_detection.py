"""``synthloop terse CONFIG.yaml``: TERSE for detection on a user's own COCO data, end to end.

The config (:class:`TerseDetectionJobConfig`, YAML; relative paths are relative to the config
file) names:

- ``real``: the real set, a COCO instances file (``annotations``, a ``.json`` file or a folder
  holding ``annotations.json``) and the folder its ``file_name`` s are relative to (``images``,
  default the JSON's folder); or ``builtin: digit_scenes`` (the digits-in-scenes benchmark data).
- ``eval``: optional, a second set of the same kind on which AP is measured (default: the real
  set itself, and the report says so: that is training-set AP), or a list of named sets
  ``[{name: val, ...}, {name: shifted, builtin: digit_scenes_shifted}, ...]``: baseline and
  fine-tuned model are scored on each (the first is the main one; a single set is named ``eval``).
  ``builtin: digit_scenes_shifted`` is the digits benchmark's shifted test set
  (:mod:`synthloop.compose.digit_scenes_shifted`, ``limit`` images, optional ``shift`` preset).
- ``foregrounds``: the cut-outs S pastes: ``source: real`` (the real set's own instances, cut out
  of their masks by :class:`~synthloop.data.instances.InstanceBank` with the TERSE A.2
  clean-up), ``coco`` (another COCO file), ``rgba_folder`` / ``mask_pairs`` (a folder
  ``<root>/<category name>/...``) or ``digits`` (built-in MNIST training digits).
- ``backgrounds``: :class:`~synthloop.jobs.paste_config.BackgroundsConfig` (``photos``,
  ``procedural`` kinds, a folder, ...).
- ``model``: ``small_fcos`` (:class:`~synthloop.models.detection.SmallDetector`) or any torchvision
  detection builder name (:func:`~synthloop.models.detection.torchvision_detector`, never with
  downloaded weights) with its ``args``; optionally a ``checkpoint`` (a state dict, e.g. a previous
  run's ``model.pt``) to start from.
- ``image_size``: every image is resized (stretched, bilinear with antialiasing) to it, boxes
  scaled with it; AP is computed in each image's own pixel coordinates. The real (and eval) set
  is held in memory at that size as float32 (``N * 3 * H * W * 4`` bytes: 2,000 images at
  128x128 take 0.4 GB), as the scene loop trains on one tensor of real images.
- ``baseline``: epochs of plain training on the real set before the loop (0 = start from the
  checkpoint or from scratch as it is).
- ``loop``: :class:`~synthloop.loops.terse_detection.SceneTerseConfig`, the A.2 loop's knobs
  (its ``seed`` defaults to the job's ``seed``).
- ``plausibility``: ``reference: teacher | baseline_random_paste | none``, the detector whose
  confidence on each kept pasted object says whether it is plausible (still detected at
  ``loop.hard_threshold``), reported next to hardness (:mod:`synthloop.metrics.plausibility`):
  the loop's teacher (default when ``loop.objective: teacher``, else ``none``), or a copy of the
  baseline fine-tuned with plain random paste for the same schedule (a second loop, in
  ``plausibility_reference/``).

Data rules (each an :class:`~synthloop.errors.InputError` naming the file and the field, or a
documented behaviour):

- An image with no objects is allowed: it is a negative for the detector (no boxes).
- A box that sticks out of its image by up to 1 px (float rounding in exporters) is clipped to
  the image; one further outside is rejected by the COCO reader, naming the annotation
  (``annotations[i].bbox``). A box with less than 1 px of width or height left after scaling to
  ``image_size`` is rejected too, naming the image and the annotation id.
- Every foreground category must be a category of the real set (matched by id for COCO sources
  and digits, by name for folder sources); otherwise the error names the category.
- ``model.num_classes`` (or ``model.args.num_classes``), when given, must be the real set's
  categories + 1 (the background).
- ``eval`` must use the real set's categories (by id, with the same names); it may lack some.

Output folder (everything written atomically)::

    config.resolved.yaml   the validated config with absolute paths (loads as a config again);
                           a comment line on top records version, git commit and seeds
    run.json               seed, synthloop version, git commit, command, start/finish/resume times
    baseline.pt            the model after baseline training (so --resume does not redo it)
    loop/                  SceneTerse's run folder: checkpoint.pt after every cycle, history, scenes
    synthetic/             the kept hard examples as a COCO data set (per-image replay params)
    model.pt, model.json   the fine-tuned model's state dict and how to rebuild it
    plausibility_reference/  with plausibility.reference: baseline_random_paste, its loop folder
    metrics.json           AP before and after (the first eval set's in baseline.ap / final_ap, every
                           set's in eval_sets: {name: {file, images, baseline, finetuned}}), per-cycle
                           history, baseline losses, hardness, plausibility (when measured)
    report.html            self-contained report

``--resume`` continues an interrupted run with the same config (the baseline is loaded, the loop
goes on from its last finished cycle); ``loop.cycles`` may be raised to extend a finished run. Any
other difference of config is an error listing the changed keys.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from synthloop.errors import InputError
from synthloop.jobs import run_folder
from synthloop.jobs.terse_detection_config import (
    BASELINE_FILE,
    CONFIG_FILE,
    LOOP_DIR,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_JSON,
    REPORT_FILE,
    SYNTHETIC_DIR,
    TerseDetectionJobConfig,
    resolved_dict,
)
from synthloop.jobs.terse_detection_setup import JobData, LoadedSet, build_target, evaluate, load_detector, load_job_data
from synthloop.metrics.detection import predicted_confidence
from synthloop.utils.memory import canvas_bytes, check_fits
from synthloop.utils.progress import Progress
from synthloop.utils.records import utc_now


@dataclass
class TerseDetectionJobResult:
    """What :func:`run_terse_detection_job` produced (paths are inside ``out_dir``)."""

    out_dir: Path
    baseline_ap: dict[str, float] | None
    final_ap: dict[str, float]
    history: list[dict[str, Any]]
    synthetic_images: int
    files: dict[str, Path] = field(default_factory=dict)
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """per evaluation set name: ``file``, ``images``, ``baseline`` and ``finetuned`` AP (as in metrics.json)"""
    plausibility: dict[str, Any] | None = None
    """metrics.json's ``plausibility`` block; ``None`` when not measured (``plausibility.reference: none``)"""


def _rounded(ap: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if ap is None else {k: round(float(v), 5) for k, v in ap.items()}


def _evaluate(target: Any, eval_set: LoadedSet, batch_size: int, progress: Progress | None, task: str) -> dict[str, float]:
    if progress is not None:
        progress(task, 0, 1)
    ap = evaluate(target, eval_set, batch_size=batch_size)
    if progress is not None:
        progress(task, 1, 1)
    return ap


def _evaluate_sets(target: Any, sets: Mapping[str, LoadedSet], batch_size: int, progress: Progress | None, task: str) -> dict[str, dict[str, float]]:
    """AP on every named set (progress task ``task``, or ``task: name`` when there are several)."""
    return {name: _rounded(_evaluate(target, ls, batch_size, progress, task if len(sets) == 1 else f"{task}: {name}")) or {} for name, ls in sets.items()}


def _baseline(cfg: TerseDetectionJobConfig, target: Any, data: JobData, sets: Mapping[str, LoadedSet], out: Path, progress: Progress | None) -> dict[str, Any]:
    """Train (or, resumed, load) the baseline and evaluate it on every set (the first one's AP is
    ``ap``, all by name ``eval_sets``); returns its info for metrics.json."""
    from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
    from synthloop.loops.detection_training import train_detector
    from synthloop.utils.seeding import derive_seed

    baseline_file = out / BASELINE_FILE
    if baseline_file.is_file():  # resumed: the baseline was trained (and evaluated) before
        state = load_checkpoint(baseline_file)
        target.model.load_state_dict(state["model"])
        baseline_info = json.loads(state["info"])
        first = next(iter(sets))
        done = baseline_info.setdefault("eval_sets", {first: baseline_info["ap"]})  # a baseline saved before named sets
        missing = {k: v for k, v in sets.items() if k not in done}
        if missing:
            done.update(_evaluate_sets(target, missing, cfg.eval_batch_size, progress, "baseline evaluation"))
            save_checkpoint(baseline_file, {"model": target.model.state_dict(), "info": json.dumps(baseline_info)})
        return baseline_info
    log = None
    if cfg.baseline.epochs > 0:
        bp = (lambda step, total, loss: progress("baseline training", step, total)) if progress is not None else None
        log = train_detector(
            target, data.real.images, data.real.targets, epochs=cfg.baseline.epochs, batch_size=cfg.baseline.batch_size,
            lr=cfg.baseline.lr, weight_decay=cfg.baseline.weight_decay, augment=cfg.baseline.augment,
            seed=derive_seed(cfg.seed, "job-baseline"), progress=bp,
        )  # fmt: skip
        target.model.eval()
    aps = _evaluate_sets(target, sets, cfg.eval_batch_size, progress, "baseline evaluation")
    baseline_info = {
        "ap": next(iter(aps.values())),
        "epochs": cfg.baseline.epochs,
        "epoch_losses": [] if log is None else [float(v) for v in log.epoch_losses],
        "seconds": 0.0 if log is None else round(log.seconds, 2),
        "from_checkpoint": str(cfg.model.checkpoint) if cfg.model.checkpoint else None,
        "eval_sets": aps,
    }
    save_checkpoint(baseline_file, {"model": target.model.state_dict(), "info": json.dumps(baseline_info)})
    return baseline_info


def _hardness(cfg: TerseDetectionJobConfig, target: Any, baseline_model: nn.Module, scenes: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Confidence on each kept composite's objects at generation (the target of that cycle) and
    under the baseline, and the hard-positive fractions (TERSE Fig. 8)."""
    gen_conf = [s.confidence.float().reshape(-1) for s in scenes]
    base_target = _with_model(target, baseline_model)
    base_conf = (
        predicted_confidence(base_target, torch.stack([s.image for s in scenes]), [s.target for s in scenes], batch_size=cfg.eval_batch_size) if scenes else []
    )
    flat_gen = torch.cat(gen_conf) if gen_conf else torch.empty(0)
    flat_base = torch.cat(base_conf) if base_conf else torch.empty(0)
    thr = cfg.loop.hard_threshold
    hardness = {
        "threshold": thr,
        "objects": int(flat_gen.numel()),
        "hard_positive_fraction_at_generation": float((flat_gen < thr).double().mean()) if flat_gen.numel() else None,
        "hard_positive_fraction_under_baseline": float((flat_base < thr).double().mean()) if flat_base.numel() else None,
        "mean_confidence_at_generation": float(flat_gen.mean()) if flat_gen.numel() else None,
        "mean_confidence_under_baseline": float(flat_base.mean()) if flat_base.numel() else None,
    }
    return flat_gen, flat_base, hardness


def _save_model(cfg: TerseDetectionJobConfig, out: Path, target: Any, data: JobData) -> None:
    """``model.pt`` and ``model.json`` (how :func:`load_detector` rebuilds the model)."""
    from synthloop.loops.checkpoint import save_checkpoint
    from synthloop.utils.atomic import atomic_write_json

    save_checkpoint(out / MODEL_FILE, {"model": target.model.state_dict()})
    model_spec = {
        "name": cfg.model.name,
        "args": {k: v for k, v in cfg.model.args.items() if k != "num_classes"},
        "num_classes": data.label_map.num_classes,
        "image_size": list(cfg.image_size),
        "category_ids": list(data.label_map.category_ids),
        "category_names": list(data.label_map.names),
        "labels": "label k (1..C) is category_ids[k - 1]; 0 is the background",
        "state_dict": MODEL_FILE + " (key 'model'; torch.load(weights_only=True))",
        "rebuild": "synthloop.jobs.terse_detection.load_detector(run folder)",
    }
    atomic_write_json(out / MODEL_JSON, model_spec)


def _report(cfg: TerseDetectionJobConfig, out: Path, metrics: dict[str, Any], scenes: Sequence[Any], data: JobData, eval_set: LoadedSet,
            target: Any, conf: Mapping[str, torch.Tensor | None]) -> None:  # fmt: skip
    from synthloop import __version__
    from synthloop.report.detection import build_detection_report, write_detection_report

    final_conf = (
        predicted_confidence(target, eval_set.images[: cfg.report.real_samples], eval_set.targets[: cfg.report.real_samples]) if cfg.report.real_samples else []
    )
    confidences = {"at generation (model of that cycle)": conf["generation"], "under the baseline": conf["baseline"]}
    if conf.get("reference") is not None:
        confidences["under the plausibility reference"] = conf["reference"]
    blocks = build_detection_report(
        cfg=cfg,
        metrics=metrics,
        scenes=scenes,
        confidences=confidences,  # type: ignore[arg-type]
        label_map=data.label_map,
        real_images=eval_set.images[: cfg.report.real_samples],
        real_targets=eval_set.targets[: cfg.report.real_samples],
        real_confidence=final_conf,
        plausibility_confidence=(conf["baseline"], conf["reference"]) if conf.get("reference") is not None else None,
    )
    write_detection_report(
        out / REPORT_FILE, "synthloop terse: TERSE for detection", blocks, subtitle=f"{Path(eval_set.file).name} · seed {cfg.seed} · synthloop {__version__}"
    )


REFERENCE_DIR = "plausibility_reference"
"""The loop folder of the ``baseline_random_paste`` plausibility reference (resumable like ``loop/``)."""


def _reference(cfg: TerseDetectionJobConfig, loop: Any, baseline_model: nn.Module, data: JobData, out: Path, resume: bool, device: str,
               progress: Progress | None) -> tuple[str, Any] | None:  # fmt: skip
    """The plausibility reference ``(description, DetectionTarget)`` or ``None`` (``plausibility.reference``)."""
    kind = cfg.plausibility_reference()
    if kind == "none":
        return None
    if kind == "teacher":
        how = (
            "a frozen copy of the baseline"
            if cfg.loop.teacher == "frozen"
            else f"an EMA of the model (decay {cfg.loop.teacher_ema:g} per cycle) as the loop ended"
        )
        return f"teacher: the loop's teacher, {how}", loop.teacher
    # baseline_random_paste: the benchmark's reference, a copy of the baseline fine-tuned with plain
    # random paste (the benchmark's random_paste settings) for the loop's cycles and T schedule
    from synthloop.experiments.detection import METHODS
    from synthloop.loops.terse_detection import SceneTerse
    from synthloop.loops.terse_detection_config import SceneTerseConfig
    from synthloop.utils.seeding import derive_seed

    plain = {k: SceneTerseConfig.model_fields[k].default for k in ("objective", "constraints", "s_noise_dim", "s_replay", "mix_random", "worst_of_k")}
    ref_cfg = SceneTerseConfig.model_validate(
        {**cfg.loop.model_dump(), **plain, **METHODS["random_paste"], "seed": derive_seed(cfg.loop.seed, "plausibility-reference")}
    )
    ref = _with_model(loop.target, copy.deepcopy(baseline_model))
    ref.name = "reference"
    ref_loop = SceneTerse(ref_cfg, ref, data.real.images, data.real.targets, data.foregrounds, data.backgrounds, device=device)
    reporter = (lambda task, done, total: progress(f"plausibility reference: {task}", done, total)) if progress is not None else None
    ref_loop.run(out / REFERENCE_DIR, resume=resume, progress=reporter)
    ref.model.eval()
    return f"baseline_random_paste: the baseline fine-tuned with random paste for {ref_cfg.cycles} cycles", ref


def _plausibility(cfg: TerseDetectionJobConfig, reference: tuple[str, Any] | None, scenes: Sequence[Any], flat_gen: torch.Tensor,
                  flat_base: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, Any] | None]:  # fmt: skip
    """The reference's confidence on every kept object (aligned with ``flat_base``) and metrics.json's ``plausibility`` block."""
    from synthloop.metrics.plausibility import hard_plausible_fraction, plausible_fraction

    if reference is None:
        return None, None
    description, ref = reference
    thr = cfg.loop.hard_threshold
    block: dict[str, Any] = {"reference": cfg.plausibility_reference(), "description": description, "threshold": thr, "objects": int(flat_base.numel())}
    if not scenes or not flat_base.numel():
        return torch.empty(0), {**block, "plausible_fraction": None, "hard_plausible_fraction": None, "hard_plausible_fraction_at_generation": None}
    flat_ref = torch.cat(predicted_confidence(ref, torch.stack([s.image for s in scenes]), [s.target for s in scenes], batch_size=cfg.eval_batch_size))
    block.update(
        plausible_fraction=plausible_fraction(flat_ref, thr),
        hard_plausible_fraction=hard_plausible_fraction(flat_base, flat_ref, thr),  # hard for the baseline, as in the benchmark
        hard_plausible_fraction_at_generation=hard_plausible_fraction(flat_gen, flat_ref, thr),  # hard for the model of its cycle
        mean_reference_confidence=float(flat_ref.mean()),
    )
    return flat_ref, block


def run_terse_detection_job(
    config: TerseDetectionJobConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    progress: Progress | None = None,
    device: str = "cpu",
    config_file: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> TerseDetectionJobResult:
    """Run a ``synthloop terse`` job into ``out_dir`` (see the module docstring for the steps and
    the files). ``config_file`` only names the config in error messages.

    Raises:
        InputError: bad data, model or config (naming the file and the field), a non-empty
            ``out_dir`` without ``resume``, or a ``resume`` with another config.
    """
    from synthloop import __version__
    from synthloop.loops.terse_detection import SceneTerse, write_synthetic_coco
    from synthloop.utils.atomic import atomic_write_json, atomic_write_text, remove_stray_temps

    cfg = config
    out = Path(out_dir)
    source = str(config_file) if config_file is not None else "config"
    (H, W), n = cfg.image_size, max(cfg.loop.batch_size, cfg.loop.t_batch_size, cfg.eval_batch_size, cfg.baseline.batch_size)
    check_fits(canvas_bytes(H, W, n), what=f"a batch of {n} {H}x{W} images", field="image_size", file=config_file)
    with run_folder.lock(out), _undo_failed_start(out):
        previous = run_folder.prepare(  # more cycles extend a run; a run killed before writing anything starts again
            out, resume=resume, config_file=CONFIG_FILE, config=resolved_dict(cfg), ignore=("loop.cycles",), resume_empty=True
        )
        remove_stray_temps(out)  # a killed run's half-written checkpoint, records or model
        t_start = time.perf_counter()

        data = load_job_data(cfg, progress)
        target = build_target(cfg, data.label_map, source)
        target.model.to(device)

        out.mkdir(parents=True, exist_ok=True)
        commit = run_folder.git_commit()
        header = f"# synthloop {__version__}, git commit {commit or 'unknown'}, seed {cfg.seed} (loop seed {cfg.loop.seed}), written {utc_now()}\n"
        atomic_write_text(out / CONFIG_FILE, header + yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
        run_info = run_folder.start_record(out, seed=cfg.seed, previous=previous, argv=argv, loop_seed=cfg.loop.seed, device=device)

        sets = data.eval_sets or {"real": data.real}  # no eval set: AP on the training set, and the report says so
        eval_set = next(iter(sets.values()))
        eval_name = ("eval" if len(sets) == 1 else next(iter(sets))) if data.eval_sets else "real (training set: no eval set given)"

        baseline_info = _baseline(cfg, target, data, sets, out, progress)
        baseline_model = copy.deepcopy(target.model).eval()

        # ---- the loop
        loop = SceneTerse(cfg.loop, target, data.real.images, data.real.targets, data.foregrounds, data.backgrounds, device=device)
        result = loop.run(out / LOOP_DIR, resume=resume, progress=progress)
        target.model.eval()

        # ---- after
        final = _evaluate_sets(target, sets, cfg.eval_batch_size, progress, "final evaluation")
        ap1 = next(iter(final.values()))
        scenes = result.scenes
        syn_file = write_synthetic_coco(scenes, out / SYNTHETIC_DIR, data.label_map)

        _save_model(cfg, out, target, data)

        flat_gen, flat_base, hardness = _hardness(cfg, target, baseline_model, scenes)
        reference = _reference(cfg, loop, baseline_model, data, out, resume, device, progress)
        flat_ref, plausibility = _plausibility(cfg, reference, scenes, flat_gen, flat_base)
        metrics = {
            "eval_set": eval_set.file,
            "eval_set_kind": eval_name,
            "eval_images": len(eval_set.dataset.images),
            "baseline": baseline_info,
            "final_ap": _rounded(ap1),
            "history": result.history,
            "synthetic_images": len(scenes),
            "hardness": hardness,
            **({"plausibility": plausibility} if plausibility is not None else {}),
            "eval_sets": {
                name: {"file": ls.file, "images": len(ls.dataset.images), "baseline": baseline_info["eval_sets"].get(name), "finetuned": final[name]}
                for name, ls in sets.items()
            },
            "foregrounds": data.foreground_report,
            "seconds": round(time.perf_counter() - t_start, 2),
        }
        atomic_write_json(out / METRICS_FILE, metrics)

        _report(cfg, out, metrics, scenes, data, eval_set, target, {"generation": flat_gen, "baseline": flat_base, "reference": flat_ref})
        run_folder.finish_record(out, run_info)
        files = {k: out / v for k, v in (("config", CONFIG_FILE), ("run", run_folder.RUN_FILE), ("synthetic", syn_file.relative_to(out).as_posix()), ("model", MODEL_FILE),
                                         ("model_json", MODEL_JSON), ("metrics", METRICS_FILE), ("report", REPORT_FILE))}  # fmt: skip
        return TerseDetectionJobResult(
            out, baseline_info["ap"], ap1, result.history, len(scenes), files, eval_sets=metrics["eval_sets"], plausibility=plausibility
        )


@contextlib.contextmanager
def _undo_failed_start(out: Path) -> Iterator[None]:
    """When ``out`` holds nothing but the lock now (a fresh run) and bad input stops the run before
    its loop's first checkpoint (e.g. a truncated background image, decoded only when the loop
    draws it), remove what the run wrote, so the corrected command starts in the same folder. A run
    with a finished cycle is kept for ``--resume``; nothing that existed before is touched."""
    fresh = not any(p.name != run_folder.LOCK_FILE for p in out.iterdir())
    try:
        yield
    except InputError:
        if fresh and not (out / LOOP_DIR / "checkpoint.pt").is_file():
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.name != run_folder.LOCK_FILE:
                    p.unlink(missing_ok=True)
        raise


def _with_model(target: Any, model: nn.Module) -> Any:
    """A :class:`~synthloop.models.detection.DetectionTarget` like ``target`` around ``model``."""
    from synthloop.models.detection import DetectionTarget

    return DetectionTarget(model, target.label_map, iou_threshold=target.iou_threshold, hard_threshold=target.hard_threshold, name="baseline")


def default_out_dir(config_file: str | Path) -> Path:
    """``runs/terse/<config file stem>``."""
    return Path("runs") / "terse" / Path(config_file).stem


__all__ = ["TerseDetectionJobResult", "default_out_dir", "load_detector", "run_terse_detection_job"]
