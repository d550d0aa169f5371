"""The TERSE demo: the quick AffNIST sample-efficiency experiment end to end, with progress bars,
a table in the terminal and a self-contained ``report.html``.

``run_terse_demo(out_dir)`` trains an MNIST-only baseline on built-in data, fine-tunes two copies
with 500 samples at a time (random AffNIST-recipe digits vs. TERSE hard examples), and writes
``<out>/report.html`` with the accuracy-vs-samples plot, the hardness histogram, the synthesized
samples of every step and a table of the numbers. Quick mode takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBars
from rich.table import Table as RichTable

from synthloop.experiments.affnist import EfficiencyConfig, EfficiencyResult, export_target, run_efficiency
from synthloop.experiments.affnist_methods import METHODS
from synthloop.jobs import run_folder
from synthloop.report.html import Block, Figure, Heading, Table, Text, write_html
from synthloop.report.plots import accuracy_curves_png, hardness_histogram_png, sample_grid_png
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.progress import Progress, announce

DEMO_METHOD = "terse_paper"
"""The learned method the demo's "TERSE" curve runs (synthloop.experiments.affnist_methods.METHODS): the
best learned method of benchmarks/results/affnist_methods.json (CPU budget to 25K added samples, 3 seeds:
terse_paper 35.0 +- 1.2 % at 5K vs random 27.9 +- 1.7 %, and 23,000 samples to match random@25K)."""


class RichProgress:
    """A ``progress(task, done, total)`` callback drawing one rich bar per task; a finished task's
    bar is hidden so the display stays short."""

    def __init__(self, progress: RichBars):
        self.progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = self.progress.add_task(task, total=total)
        tid = self._tasks[task]
        self.progress.update(tid, completed=done, total=total)
        if done >= total:
            self.progress.update(tid, visible=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def summary_rows(result: EfficiencyResult) -> list[tuple[str, Any, Any]]:
    """``(quantity, ours, paper)`` rows of the demo's table; accuracies are fractions."""
    s = result.summary()
    paper = s["paper"]
    ref = s["reference_added"]
    rows: list[tuple[str, Any, Any]] = [
        ("MNIST-only accuracy on the AffNIST-style test set", s["mnist_only_acc"], paper["mnist_only_acc"]),
        ("MNIST-only accuracy on padded MNIST", s["mnist_only_clean_mnist_acc"], None),
        ("random: accuracy at 5K added", s["random_acc_at_5k"], paper["random_acc_at_5k"]),
        ("TERSE: accuracy at 5K added", s["terse_acc_at_5k"], paper["terse_acc_at_5k"]),
    ]
    if ref != 5_000:
        rows.append((f"random: accuracy at {ref} added", s["random_acc_at_reference"], paper["random_acc_at_25k"] if ref == 25_000 else None))
    rows += [
        (f"TERSE samples to reach random@{ref}", s["terse_samples_to_match_random"], paper["terse_samples_to_match_random_25k"] if ref == 25_000 else None),
        ("mean hardness under the baseline: random", result.hardness.means.get("random"), None),
        ("mean hardness under the baseline: TERSE", result.hardness.means.get("terse"), None),
        ("reference classifier accuracy (AffNIST-style test)", s["reference_acc"], None),
        ("unrecognised by the reference: random samples", s["random_unrecognised_frac_mean"], None),
        ("unrecognised by the reference: TERSE samples", s["terse_unrecognised_frac_mean"], None),
        ("wall time (s)", round(result.timings.get("total_s", 0.0)), None),
    ]
    return rows


def report_blocks(result: EfficiencyResult) -> list[Block]:
    """The report's content: numbers, plots, per-step table and sample grids."""
    cfg = result.config
    blocks: list[Block] = [
        Text(
            "An MNISTClassifier trained on padded MNIST is fine-tuned by adding "
            f"{cfg.step_size} samples at a time, either random AffNIST-recipe digits (random) or hard examples "
            "that the TERSE synthesizer generates against the current classifier (TERSE); both curves use the "
            "same seeds and fine-tuning schedule. Accuracy is measured on an AffNIST-style test set (the recipe "
            "applied with a fixed seed to MNIST test digits). Accuracies are fractions."
        ),
        Text(f"The learned curve runs the method {cfg.learned or 'terse_paper'} (loop options; see synthloop.experiments.affnist_methods)."),
        Heading("Numbers"),
        Table(["quantity", "this run", "paper"], [list(r) for r in summary_rows(result)], float_format="{:.3f}"),
        Heading("Accuracy vs. added samples (TERSE Fig. 7)"),
    ]
    markers = {}
    if result.terse_samples_to_match is not None:
        markers["TERSE reaches random"] = (result.terse_samples_to_match, result.random_reference_acc)
    blocks.append(
        Figure(
            accuracy_curves_png({"random": result.random, "terse": result.terse}, reference_level=result.mnist_only_acc, markers=markers),
            "Test accuracy after each step; dashed: MNIST only.",
        )
    )
    blocks.append(Heading("Hardness of the added samples (TERSE Fig. 8 analogue)"))
    blocks.append(
        Figure(
            hardness_histogram_png(result.hardness, title="Hardness 1 - p(true class) under the MNIST-only baseline"),
            "Fraction of each set's samples per hardness bin.",
        )
    )
    rows = []
    for t, r in zip(result.terse_history, result.random_history):
        rows.append([t["cycle"], t["synthetic_total"], r["test_acc"], t["test_acc"], t["s_steps"], t.get("s_first_hard_frac"), t.get("unrecognised_frac")])
    blocks.append(Heading("Per step"))
    blocks.append(
        Table(
            ["step", "added", "random acc", "TERSE acc", "S batches", "hard fraction of S's first batch", "unrecognised (TERSE)"], rows, float_format="{:.3f}"
        )
    )
    blocks.append(Heading("Synthesized samples per step (TERSE Fig. 4 analogue)"))
    blocks.append(Text("One row per class; each grid holds the first ten hard examples of each class that S produced in that step."))
    for k, cache in enumerate(result.terse_caches, start=1):
        if len(cache):
            blocks.append(Figure(sample_grid_png(cache.images, cache.labels, per_class=10), f"TERSE step {k}: {len(cache)} hard examples"))
    if result.random_caches and len(result.random_caches[0]):
        first = result.random_caches[0]
        blocks.append(Figure(sample_grid_png(first.images, first.labels, per_class=10), "For comparison: random AffNIST-recipe samples (step 1)"))
    blocks.append(Heading("Deviations from the paper's protocol"))
    blocks.extend(Text(d) for d in cfg.deviations())
    return blocks


@dataclass
class DemoResult:
    report: Path
    summary: dict[str, Any]
    result: EfficiencyResult


def run_terse_demo(
    out_dir: str | Path,
    quick: bool = True,
    *,
    device: torch.device | str = "cpu",
    config: EfficiencyConfig | None = None,
    console: Console | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the AffNIST efficiency experiment (``quick``: :meth:`EfficiencyConfig.quick`, else the
    full budget, or ``config``) and write ``<out_dir>/report.html``, ``summary.json``, the step
    caches of both curves and the exported TERSE target (``target.pt2`` + ``target.json``).
    Prints progress bars, the table of numbers and the report's path to ``console``.

    Runs already finished in ``<out_dir>/runs`` with the same configuration are reused; one with a
    different configuration is an :class:`~synthloop.errors.InputError` (choose another folder).

    ``progress`` (e.g. the command line's display) replaces the transient bars drawn on ``console``;
    the experiment's log lines then go to it as messages."""
    out = Path(out_dir)
    console = console or Console()
    cfg = config or (EfficiencyConfig.quick(learned=METHODS[DEMO_METHOD]) if quick else EfficiencyConfig(learned=METHODS[DEMO_METHOD]))
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with run_folder.lock(out):
        with contextlib.ExitStack() as stack:
            if progress is None:
                bars = stack.enter_context(RichBars(*columns, console=console, transient=True))
                progress, log = RichProgress(bars), lambda m: console.print(m, highlight=False)
            else:
                log = functools.partial(announce, progress)
            result = run_efficiency(cfg, device=device, run_dir=out / "runs", resume=True, progress=progress, log=log)
        export_target(result.terse_model, out / "target.pt2", experiment="terse-demo")
        report = write_html(
            out / "report.html",
            "TERSE on AffNIST-style digits",
            report_blocks(result),
            subtitle=f"{'quick' if quick and config is None else 'custom' if config else 'full'} run, {time.perf_counter() - start:.0f} s on {device}",
        )
        summary = result.summary()
        atomic_write_json(
            out / "summary.json", {**summary, "random": result.random, "terse": result.terse, "config": cfg.to_dict(), "deviations": cfg.deviations()}
        )
        table = RichTable(title="TERSE vs random (AffNIST-style test accuracy)")
        for name in ("quantity", "this run", "paper"):
            table.add_column(name, justify="left" if name == "quantity" else "right")
        for quantity, ours, paper in summary_rows(result):
            table.add_row(quantity, _fmt(ours), _fmt(paper))
        console.print(table)
        console.print(f"report: {report}", highlight=False)
    return DemoResult(report=report, summary=summary, result=result)
