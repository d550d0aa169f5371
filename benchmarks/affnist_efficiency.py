"""TERSE Fig. 7: accuracy on an AffNIST-style test set vs. number of added training samples,
random AffNIST-recipe samples vs. TERSE hard examples (see :mod:`synthloop.experiments.affnist`).

Protocol: an MNISTClassifier is trained on padded 40x40 MNIST ("MNIST only"; paper ~17%). Two
copies are then fine-tuned in lock-step: each step adds 500 samples to the training set (MNIST +
everything added so far) and fine-tunes T; the random curve adds random recipe digits, the
TERSE curve adds hard examples that the synthesizer S generates against the current T. Same
seeds and schedule for both. Reported: both curves, accuracy at 5K added samples (paper: ~80%
TERSE, ~40% random), and how many TERSE samples reach the random curve's accuracy at 25K
(paper: 12K; target <= 8K).

Budget (defaults, for ~30 min on 2 CPU cores; paper values in brackets): 50 steps of 500 per
curve [to ~30K], 2 fine-tuning epochs per step [30], each epoch = 10,000 random MNIST digits
plus all added samples [all 50,000 MNIST], S at least 10 / at most 50 batches of 1024 per step
[until 50 hard per class], baseline 3 epochs [not stated]. Measured on 2 cores: one
MNISTClassifier epoch over 10,000 digits ~1.5 s, evaluation of 10,000 ~1.3 s, one S batch of
1024 ~1.1 s; estimated full run ~25 min. Every deviation is written into the JSON
(``deviations``).

Usage::

    python benchmarks/affnist_efficiency.py [--quick] [--device cuda] [--steps 50] [...]
    python benchmarks/affnist_efficiency.py --methods random,worst_of_k,terse_paper,terse_teacher,terse_anchor \
        --seeds 3 --budget cpu --threads 1        # issue 10: methods x seeds -> affnist_methods.json

Methods mode (``--methods``): every method of :data:`synthloop.experiments.affnist_methods.METHODS`
runs the same protocol on each seed (``--budget cpu``: :meth:`EfficiencyConfig.cpu_budget`, sized
for about 40 minutes for five methods x 3 seeds to 5K on one loaded core, about 2 hours with
``--steps 50``, i.e. to 25K; ``--budget full``: the defaults above). Writes
``benchmarks/results/affnist_methods.json`` (rewritten after every seed, ``seeds`` says how many
are in), the per-cycle histories of every run in ``affnist_methods_histories.json.gz``, the plot
``affnist_methods.png`` (mean curve and +-1 std band per method) and the best learned method's
first-seed target ``affnist_best_target.pt2``.

Writes ``benchmarks/results/affnist_efficiency.json`` (``--quick``: ``..._quick.json``), the
plot ``affnist_efficiency.png`` and the final TERSE target ``affnist_efficiency_target.pt2``
(+ ``.json`` input spec: float32 (N, 1, 40, 40) in [0, 1], white digit on black -> logits (N, 10)).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, repo_relative, write_result

from synthloop.experiments.affnist import PAPER_EFFICIENCY, EfficiencyConfig, export_target, run_efficiency
from synthloop.experiments.affnist_methods import MethodsResult, mean_curve, run_methods
from synthloop.report.plots import accuracy_curves_png
from synthloop.utils.atomic import atomic_write_bytes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the demo's small budget (a few minutes on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--run-dir", type=Path, default=None, help="keep both runs' folders (caches per step, grids) here")
    p.add_argument("--methods", default=None, help="comma-separated methods (issue 10 mode; see METHODS)")
    p.add_argument("--seeds", type=int, default=3, help="methods mode: seeds 0..N-1")
    p.add_argument("--budget", choices=("cpu", "full"), default="cpu", help="methods mode: EfficiencyConfig.cpu_budget() or the defaults")
    for name, kind in (
        ("seed", int), ("train-digits", int), ("test-digits", int), ("base-epochs", int), ("steps", int),
        ("terse-steps", int), ("step-size", int), ("finetune-epochs", int), ("finetune-real-per-epoch", int),
        ("s-batch-size", int), ("s-min-steps", int), ("s-max-steps", int), ("s-noise-dim", int), ("reference-epochs", int),
        ("t-synthetic-per-epoch", int),
    ):  # fmt: skip
        p.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            help=f"EfficiencyConfig{'.loop' if name.replace('-', '_') in LOOP_KEYS else ''}.{name.replace('-', '_')} (0 = all for *-digits / *-per-epoch)",
        )
    return p.parse_args(argv)


LOOP_KEYS = ("s_batch_size", "s_min_steps", "s_max_steps", "s_noise_dim", "t_synthetic_per_epoch")
"""Options that set EfficiencyConfig.loop's fields; the others set EfficiencyConfig's own."""


def build_config(args: argparse.Namespace) -> EfficiencyConfig:
    overrides: dict = {}
    for key in ("seed", "train_digits", "test_digits", "base_epochs", "steps", "terse_steps", "step_size", "finetune_epochs",
                "finetune_real_per_epoch", "reference_epochs"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            overrides[key] = None if (value == 0 and key in ("train_digits", "test_digits", "finetune_real_per_epoch")) else value
    if args.methods:
        base = EfficiencyConfig.cpu_budget() if args.budget == "cpu" else EfficiencyConfig()
    else:
        base = EfficiencyConfig.quick() if args.quick else EfficiencyConfig()
    loop = {k: getattr(args, k) for k in LOOP_KEYS if getattr(args, k) is not None}
    if loop.get("t_synthetic_per_epoch") == 0:
        loop["t_synthetic_per_epoch"] = None  # every added sample in every fine-tuning epoch (paper)
    if loop:
        overrides["loop"] = base.loop.model_copy(update=loop)
    return base.model_copy(update=overrides) if overrides else base


def band_plot_png(result: MethodsResult) -> bytes:
    """One mean curve with a +-1 std band per method (matplotlib, no display)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.add_subplot()
    for name in result.methods:
        pts = mean_curve(result.curves(name))
        xs, ms, ss = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        line = ax.plot(xs, ms, marker="o", markersize=3, label=name, color="black" if name == "random" else None)[0]
        ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)], alpha=0.2, color=line.get_color())
    ax.axhline(result.random_level(), color="grey", linestyle="--", linewidth=1, label=f"random@{result.reference_added() // 1000}K")
    ax.set_xlabel("added training samples")
    ax.set_ylabel("test accuracy (AffNIST-style)")
    ax.set_title(f"Fig. 7 by method, mean +- std over {len(result.seeds)} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def methods_payload(result: MethodsResult, model: str | None) -> dict:
    """The issue-10 JSON contract (plus diagnostics, per-seed curves, config and deviations)."""
    best = result.best_method()
    ref = result.reference_added()
    return {
        "methods": {m: result.summary(m) for m in result.methods},
        "best_method": best,
        "best_model": model,
        "seeds": len(result.seeds),
        "reference_added": ref,
        "random_acc_at_reference": result.random_level(),
        "note": (
            f"samples_to_match_random_25k is measured against random@{ref} (the last point of this budget's random curve) "
            "when the budget stops before 25K; best_method is picked on the same seeds it is reported on"
        ),
        "mnist_only_acc": result.mnist_only_acc,
        "reference_acc": result.reference_acc,
        "per_seed_curves": {m: [[[int(x), float(y)] for x, y in c] for c in result.curves(m)] for m in result.methods},
        "config": result.config.to_dict(),
        "deviations": result.config.deviations()
        + ["each method runs the same protocol; only the loop's sample source and S options differ (see methods.*.options)"],
        "paper": PAPER_EFFICIENCY,
        "timings": result.timings,
    }


HISTORIES = "affnist_methods_histories.json.gz"
"""Per-cycle histories of every method and seed (~1 MB of JSON): kept out of ``affnist_methods.json``."""


def write_histories(result: MethodsResult, path: Path) -> str:
    """Write ``{"METHOD/seedS": history}`` as compact gzip'd JSON (mtime 0: same bytes for the same
    histories); returns the path the methods JSON records under ``histories``."""
    histories = {f"{r.method}/seed{r.seed}": r.history for r in result.runs}
    atomic_write_bytes(path, gzip.compress(json.dumps(histories, separators=(",", ":")).encode(), mtime=0))
    return repo_relative(path)


def main_methods(args: argparse.Namespace) -> dict:
    cfg = build_config(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results_dir = Path(args.results_dir)
    payload: dict = {}
    runs = []
    start = time.perf_counter()
    for seed in range(args.seeds):  # one seed at a time, so a cut-short run still leaves its finished seeds
        part = run_methods(cfg, methods, [cfg.seed + seed], device=args.device, log=lambda m: print(m, flush=True))
        runs += part.runs
        done = MethodsResult(cfg, methods, [cfg.seed + s for s in range(seed + 1)], runs, [], [])
        done.mnist_only_acc = (payload.get("mnist_only_acc") or []) + part.mnist_only_acc
        done.reference_acc = (payload.get("reference_acc") or []) + part.reference_acc
        done.timings = {"total_s": time.perf_counter() - start}
        best = done.best_method()
        model = done.model_of(best)
        info = export_target(model, results_dir / "affnist_best_target.pt2", experiment="affnist_methods", method=best) if model is not None else None
        model_rel = repo_relative(results_dir / info["file"]) if info else None
        payload = methods_payload(done, model_rel)
        payload["histories"] = write_histories(done, results_dir / HISTORIES)
        payload.update(plot=repo_relative(results_dir / "affnist_methods.png"), device=args.device, budget=args.budget, wall_s=time.perf_counter() - start)
        atomic_write_bytes(results_dir / "affnist_methods.png", band_plot_png(done))
        path = write_result("affnist_methods", payload, device=args.device, results_dir=results_dir)
        for m in methods:
            s = payload["methods"][m]
            print(f"[{seed + 1} seed(s)] {m}: match random@{done.reference_added()} at {s['samples_to_match_random_25k']}, "
                  f"readability {s['readability']}, hardness {s['hardness']}, curve {[round(p[1], 3) for p in s['curve']]}", flush=True)  # fmt: skip
        print(f"best {best} -> {path}", flush=True)
    return payload


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.methods:
        return main_methods(args)
    cfg = build_config(args)
    name = "affnist_efficiency_quick" if args.quick else "affnist_efficiency"
    start = time.perf_counter()
    result = run_efficiency(cfg, device=args.device, run_dir=args.run_dir, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - start
    results_dir = Path(args.results_dir)
    model_path = results_dir / f"{name}_target.pt2"
    info = export_target(result.terse_model, model_path, experiment=name)
    model_file = model_path.with_name(info["file"])
    markers = {}
    if result.terse_samples_to_match is not None:
        markers[f"TERSE reaches random@{result.reference_added // 1000}K"] = (result.terse_samples_to_match, result.random_reference_acc)
    png = accuracy_curves_png({"random": result.random, "terse": result.terse}, reference_level=result.mnist_only_acc, markers=markers)
    atomic_write_bytes(results_dir / f"{name}.png", png)
    payload = result.to_json(model=repo_relative(model_file), wall_s=wall)
    payload.update(plot=repo_relative(results_dir / f"{name}.png"), device=args.device, quick=args.quick)
    path = write_result(name, payload, device=args.device, results_dir=results_dir)
    s = result.summary()
    print(
        f"MNIST only {s['mnist_only_acc']:.3f} | at 5K: random {s['random_acc_at_5k']}, TERSE {s['terse_acc_at_5k']} | "
        f"random at {s['reference_added']}: {s['random_acc_at_reference']:.3f}, TERSE reaches it at {s['terse_samples_to_match_random']} | "
        f"{wall:.0f} s -> {path}"
    )
    return payload


if __name__ == "__main__":
    main()
