"""``synthloop imitate CONFIG.yaml``: imitation training for detection, end to end.

Steps: load and validate everything (the ``terse`` job's loaders: real set, validation split,
optional test set, foreground / background banks, model) before the run folder is touched; train
the baseline on the real set exactly as ``synthloop terse`` does (``baseline.pt``, so ``--resume``
does not redo it); run :class:`~synthloop.loops.imitation.ImitationLoop` in the run folder; load
the cycle with the best validation score; evaluate it (and the baseline) on the validation split
and the test set; write the report.

Run folder (everything written atomically)::

    config.resolved.yaml   the validated config with absolute paths (a comment line records version, commit, seed)
    run.json               seed, synthloop version, git commit, command, threads, start/finish/resume times
    baseline.pt            the model after baseline training
    cycle_NNN.pt           the model after cycle N
    scenes_NNN.json        the params of every scene re-simulated in cycle N (replay_scene replays each exactly)
    failures_NNN.json      the failures mined at the start of cycle N
    cycles.json            per cycle: failures by kind, scenes added, measured synthetic share, val AP, time
    checkpoint.pt          the loop's state after the last finished cycle (what --resume reads)
    model.pt               the selected cycle's weights
    metrics.json           AP of the baseline and the selected model on val (and test), the selection, timings
    report.html            the report (:mod:`synthloop.report.imitation`)

Bad input is an :class:`~synthloop.errors.InputError` naming the file and the field; a fresh run
stopped by it leaves no folder content behind (a run with a finished cycle is kept for ``--resume``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from synthloop.errors import InputError
from synthloop.jobs import run_folder
from synthloop.jobs.imitate_config import (
    BASELINE_FILE,
    CONFIG_FILE,
    CYCLES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    OUTPUTS,
    REPORT_FILE,
    ImitateJobConfig,
    resolved_dict,
)
from synthloop.jobs.terse_detection_setup import LoadedSet, _check_eval_categories, _load_resized, _read_source, build_target, evaluate, load_job_data
from synthloop.utils.progress import Progress
from synthloop.utils.records import utc_now


@dataclass
class ImitateJobResult:
    out_dir: Path
    baseline: dict[str, Any]
    selected: dict[str, Any]
    history: list[dict[str, Any]]
    selected_cycle: int | None
    stop_reason: str


def _test_set(cfg: ImitateJobConfig, real_ds: Any, label_map: Any) -> LoadedSet | None:
    if cfg.test is None:
        return None
    from synthloop.data.dataset import Dataset

    ds, file = _read_source(cfg.test, "test")
    _check_eval_categories(real_ds, ds, file)
    ds = Dataset(root=ds.root, categories=list(real_ds.categories), images=ds.images, info=ds.info)
    return _load_resized(ds, file, tuple(cfg.image_size), label_map, "test")


def _val_set(val: LoadedSet, label_map: Any) -> Any:
    from synthloop.loops.imitation import ValSet, coco_scorer

    attrs = [[dict(a.attributes) for a in e.annotations if not a.iscrowd] for e in val.dataset.images]
    return ValSet(val.images, val.targets, [e.id for e in val.dataset.images], coco_scorer(val.dataset, label_map, val.scales), attrs)


def _baseline(cfg: ImitateJobConfig, target: Any, data: Any, out: Path, progress: Progress | None) -> dict[str, Any]:
    """Train the baseline on the real set as ``synthloop terse`` does (same settings, same seed
    derivation), evaluate it on val; resumed: load ``baseline.pt``."""
    from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
    from synthloop.loops.detection_training import train_detector
    from synthloop.utils.seeding import derive_seed

    path = out / BASELINE_FILE
    if path.is_file():
        state = load_checkpoint(path)
        target.model.load_state_dict(state["model"])
        return json.loads(state["info"])
    b, log = cfg.baseline, None
    if b.epochs > 0:
        bp = (lambda step, total, loss: progress("baseline training", step, total)) if progress is not None else None
        log = train_detector(
            target, data.real.images, data.real.targets, epochs=b.epochs, batch_size=b.batch_size, lr=b.lr, weight_decay=b.weight_decay,
            augment=b.augment, seed=derive_seed(cfg.seed, "job-baseline"), progress=bp,
        )  # fmt: skip
    target.model.eval()
    info = {
        "ap": _rounded(evaluate(target, data.eval, batch_size=cfg.eval_batch_size)),
        "epochs": b.epochs,
        "epoch_losses": [] if log is None else [round(float(v), 5) for v in log.epoch_losses],
        "seconds": 0.0 if log is None else round(log.seconds, 2),
    }
    save_checkpoint(path, {"model": target.model.state_dict(), "info": json.dumps(info)})
    return info


def _rounded(ap: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 5) for k, v in ap.items()}


def run_imitate_job(
    config: ImitateJobConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    device: str = "cpu",
    config_file: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> ImitateJobResult:
    """Run the job into ``out_dir`` (see the module docstring).

    Raises:
        InputError: bad data, model or config (naming the file and the field), a non-empty
            ``out_dir`` without ``resume``/``overwrite``, or a ``resume`` with another config.
    """
    from synthloop import __version__
    from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
    from synthloop.loops.imitation import ImitationLoop, load_cycle
    from synthloop.utils.atomic import atomic_write_json, atomic_write_text, remove_stray_temps

    cfg = config
    out = Path(out_dir)
    source = str(config_file) if config_file is not None else "config"
    tcfg = cfg.as_terse()
    with run_folder.lock(out), _undo_failed_start(out):
        previous = run_folder.prepare(
            out, resume=resume, overwrite=overwrite, outputs=_outputs(out), config_file=CONFIG_FILE, config=resolved_dict(cfg),
            ignore=("loop.max_cycles",), resume_empty=True,
        )  # fmt: skip
        remove_stray_temps(out)
        t_start = time.perf_counter()
        data = load_job_data(tcfg, progress)  # validates real, val and the banks before anything is written
        assert data.eval is not None
        test = _test_set(cfg, data.real.dataset, data.label_map)
        target = build_target(tcfg, data.label_map, source)
        target.model.to(device)

        out.mkdir(parents=True, exist_ok=True)
        header = f"# synthloop {__version__}, git commit {run_folder.git_commit() or 'unknown'}, seed {cfg.seed}, written {utc_now()}\n"
        atomic_write_text(out / CONFIG_FILE, header + yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
        run_info = run_folder.start_record(out, seed=cfg.seed, previous=previous, argv=argv, loop_seed=cfg.loop.seed, device=device)

        baseline_info = _baseline(cfg, target, data, out, progress)
        loop = ImitationLoop(cfg.loop, target, data.real.images, data.real.targets, _val_set(data.eval, data.label_map), data.foregrounds, data.backgrounds,
                             eval_batch_size=cfg.eval_batch_size)  # fmt: skip
        result = loop.run(out, resume=resume, progress=progress)
        selected = result.selected_cycle
        if selected is not None:
            load_cycle(target, out, selected)
        target.model.eval()
        save_checkpoint(out / MODEL_FILE, {"model": target.model.state_dict(), "cycle": selected if selected is not None else 0})
        sel = {"val": _rounded(evaluate(target, data.eval, batch_size=cfg.eval_batch_size))}
        metrics: dict[str, Any] = {"baseline": {"val": baseline_info["ap"]}, "selected": sel, "selected_cycle": selected, "stop_reason": result.stop_reason}
        if test is not None:
            sel["test"] = _rounded(evaluate(target, test, batch_size=cfg.eval_batch_size))
            target.model.load_state_dict(load_checkpoint(out / BASELINE_FILE)["model"])
            metrics["baseline"]["test"] = _rounded(evaluate(target, test, batch_size=cfg.eval_batch_size))
        metrics.update(history=result.history, seconds=round(time.perf_counter() - t_start, 2), foregrounds=data.foreground_report)
        atomic_write_json(out / CYCLES_FILE, result.history)
        atomic_write_json(out / METRICS_FILE, metrics)
        _report(cfg, out, result, data, metrics)
        run_folder.finish_record(out, run_info)
        return ImitateJobResult(out, metrics["baseline"], sel, result.history, selected, result.stop_reason)


def _report(cfg: ImitateJobConfig, out: Path, result: Any, data: Any, metrics: dict[str, Any]) -> None:
    from synthloop import __version__
    from synthloop.report.imitation import build_imitation_report, write_imitation_report

    assert data.eval is not None
    failures = [[f.to_dict() for f in cyc] for cyc in result.failures]
    names = dict(zip(data.label_map.category_ids, data.label_map.names))
    table = {"baseline (val)": metrics["baseline"]["val"], f"cycle {result.selected_cycle} (val)": metrics["selected"]["val"]}
    if "test" in metrics["selected"]:
        table.update({"baseline (test)": metrics["baseline"]["test"], f"cycle {result.selected_cycle} (test)": metrics["selected"]["test"]})
    blocks = build_imitation_report(
        history=result.history, selected=result.selected_cycle, stop_reason=result.stop_reason, failures=failures, scenes=result.scenes,
        val_images=data.eval.images, names=names, config=resolved_dict(cfg), metrics=table, gallery=cfg.report.failures_per_cycle,
        per_failure=cfg.report.scenes_per_failure, scale=cfg.report.scale,
    )  # fmt: skip
    write_imitation_report(out / REPORT_FILE, blocks, subtitle=f"seed {cfg.seed} · synthloop {__version__}")


def _outputs(out: Path) -> list[str]:
    """What ``--overwrite`` removes: the job's files and its per-cycle files."""
    names = list(OUTPUTS)
    if out.is_dir():
        names += [p.name for p in out.iterdir() if p.name.startswith(("cycle_", "scenes_", "failures_"))]
    return names


@contextlib.contextmanager
def _undo_failed_start(out: Path) -> Iterator[None]:
    """A fresh run stopped by bad input before its first finished cycle leaves nothing behind."""
    fresh = not out.exists() or not any(p.name != run_folder.LOCK_FILE for p in out.iterdir())
    try:
        yield
    except InputError:
        if fresh and out.is_dir() and not (out / "checkpoint.pt").is_file():
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.name != run_folder.LOCK_FILE:
                    p.unlink(missing_ok=True)
        raise


def default_out_dir(config_file: str | Path) -> Path:
    """``runs/imitate/<config file stem>``."""
    return Path("runs") / "imitate" / Path(config_file).stem


def read_cycles(out_dir: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(out_dir) / CYCLES_FILE).read_text())


__all__ = ["ImitateJobResult", "default_out_dir", "read_cycles", "run_imitate_job"]
