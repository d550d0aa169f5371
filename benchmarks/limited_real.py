"""Limited real data + a renderer (MrGAN Tables 1-3 analogue on digits): how far do 10 or 100 real
MNIST digits per class get with rendered digits, mixing ratios and refined synthetic data?

The protocol is :mod:`synthloop.experiments.limited_real`; this script runs it, prints the rows
and writes the results with their plots.

Usage::

    python benchmarks/limited_real.py [--quick] [--threads 1] [--run-dir runs/limited_real]

Writes ``benchmarks/results/limited_real.json`` (``--quick``: ``limited_real_quick.json``),
``limited_real_rows.png``, ``limited_real_ablation.png``, ``limited_real_samples.png`` and the log
``limited_real.log``. Finished classifier runs and refined sets are cached in ``--run-dir``, so
an interrupted run continues where it stopped (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, repo_relative, write_result  # noqa: E402

from synthloop.data.mnist import load_mnist  # noqa: E402
from synthloop.experiments.limited_real import NUM_CLASSES, REFINERS, Budget, Result, real_subset, result_payload, run  # noqa: E402
from synthloop.report.plots import figure_png, sample_grid_png  # noqa: E402
from synthloop.utils.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402


def rows_png(res: Result) -> bytes:
    from matplotlib.figure import Figure

    main = [r for r in res.rows if not r["name"].startswith("ablation:")]
    groups = sorted({r["real_per_class"] for r in main if r["real_per_class"] is not None})
    fig = Figure(figsize=(7.5, 1.2 + 0.28 * len(main)))
    axes = fig.subplots(1, max(1, len(groups)), sharey=False, squeeze=False)[0]
    for ax, rpc in zip(axes, groups):
        sel = [r for r in main if r["real_per_class"] in (rpc, None)]
        labels = [f"{r['name']}" + (f" {r['ratio']}" if r["ratio"] else "") + (" +aug" if r["aug"] else "") for r in sel]
        colours = ["tab:grey" if r["name"] == "real_only" else "tab:blue" if r["name"] == "real+raw" else "tab:green" if r["name"].startswith("real+") else "tab:orange" for r in sel]
        ys = range(len(sel))
        ax.barh(list(ys), [r["acc_mean"] for r in sel], xerr=[r["acc_std"] for r in sel], color=colours, capsize=2)
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        lo = min(r["acc_mean"] for r in sel)
        ax.set_xlim(max(0.0, lo - 0.1), 1.0)
        ax.set_title(f"{rpc} real per class", fontsize=9)
        ax.set_xlabel("MNIST test accuracy")
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def ablation_png(res: Result) -> bytes:
    from matplotlib.figure import Figure

    rows = [r for r in res.rows if r["name"].startswith("ablation:")]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    ax.errorbar(xs, [r["acc_mean"] for r in rows], yerr=[r["acc_std"] for r in rows], marker="o", capsize=3)
    ax.set_xticks(xs, [r["name"].split(":", 1)[1] for r in rows], rotation=30, fontsize=8)
    ax.set_ylabel("MNIST test accuracy (synthetic only)")
    ax.set_title("Latent variations added one by one (MrGAN Table 1 analogue)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def samples_png(res: Result, real: torch.Tensor) -> tuple[bytes, list[str]]:
    """One row per source (real, raw, each refiner at the smallest real set, the ablation steps),
    the first digit of each class."""
    rpc = min(int(k.rsplit("_", 1)[1]) for k in res.samples if k.split("_")[0] in REFINERS) if any(k.split("_")[0] in REFINERS for k in res.samples) else None
    names = ["raw"] + ([f"{m}_{rpc}" for m in REFINERS] if rpc is not None else []) + [k for k in res.samples if k.startswith("ablation:")]
    def firsts(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x[torch.stack([(y == c).nonzero()[0, 0] for c in range(NUM_CLASSES)])]

    images = [real[:NUM_CLASSES]] + [firsts(*res.samples[n]) for n in names]
    row_labels = torch.arange(len(images)).repeat_interleave(NUM_CLASSES)
    return sample_grid_png(torch.cat(images), row_labels, per_class=NUM_CLASSES, num_classes=len(images), scale=2), ["real"] + names


def write_outputs(res: Result, b: Budget, name: str, out: Path, *, threads: int, quick: bool, log: Callable[[str], None] = print) -> dict:
    """Plots and ``<out>/<name>.json`` (the output contract: ``commit`` and ``rows``)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    plots["rows"] = out / f"{name}_rows.png"
    atomic_write_bytes(plots["rows"], rows_png(res))
    if any(r["name"].startswith("ablation:") for r in res.rows):
        plots["ablation"] = out / f"{name}_ablation.png"
        atomic_write_bytes(plots["ablation"], ablation_png(res))
    real_x, _ = real_subset(load_mnist("train"), 1, 0)
    png, grid_rows = samples_png(res, real_x)
    plots["samples"] = out / f"{name}_samples.png"
    atomic_write_bytes(plots["samples"], png)
    payload = result_payload(res, b, threads=threads, quick=quick)
    payload.update(plots={k: repo_relative(v) for k, v in plots.items()}, samples_rows=grid_rows)
    path = write_result(name, payload, results_dir=out)
    log(f"targets: {json.dumps(payload['targets'])}")
    log(f"wrote {path} in {res.timings['total_s']:.0f} s")
    return payload


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1-2 minute smoke run (one seed, tiny sets)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--run-dir", type=Path, default=None, help="cache folder (default runs/limited_real[_quick])")
    p.add_argument("--no-cache", action="store_true", help="run everything, keep nothing")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--budget", type=json.loads, default={}, metavar="JSON", help='Budget fields to override, e.g. \'{"clf_steps": 3}\' (lists for tuples)')
    p.add_argument("--name", default=None, help="result name (default limited_real[_quick])")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in args.budget.items()}
    b = Budget.quick(**overrides) if args.quick else replace(Budget(), **overrides)
    if args.no_ablation:
        b = replace(b, ablation=False)
    name = args.name or ("limited_real_quick" if args.quick else "limited_real")
    run_dir = None if args.no_cache else (args.run_dir or ROOT / "runs" / name)
    lines: list[str] = []

    def log(msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        lines.append(f"{stamp} {msg}")
        print(f"{stamp} {msg}", flush=True)

    log(f"budget: {asdict(b)}")
    res = run(b, run_dir, log)
    payload = write_outputs(res, b, name, Path(args.results_dir), threads=args.threads, quick=args.quick, log=log)
    atomic_write_text(Path(args.results_dir) / f"{name}.log", "\n".join(lines) + "\n")
    return payload


if __name__ == "__main__":
    main()
