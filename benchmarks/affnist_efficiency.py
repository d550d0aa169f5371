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

Writes ``benchmarks/results/affnist_efficiency.json`` (``--quick``: ``..._quick.json``), the
plot ``affnist_efficiency.png`` and the final TERSE target ``affnist_efficiency_target.pt2``
(+ ``.json`` input spec: float32 (N, 1, 40, 40) in [0, 1], white digit on black -> logits (N, 10)).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, repo_relative, write_result  # noqa: E402

from synthloop.experiments.affnist import EfficiencyConfig, export_target, run_efficiency  # noqa: E402
from synthloop.report.plots import accuracy_curves_png  # noqa: E402
from synthloop.utils.atomic import atomic_write_bytes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the demo's small budget (a few minutes on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--run-dir", type=Path, default=None, help="keep both runs' folders (caches per step, grids) here")
    for name, kind in (
        ("seed", int), ("train-digits", int), ("test-digits", int), ("base-epochs", int), ("steps", int),
        ("terse-steps", int), ("step-size", int), ("finetune-epochs", int), ("finetune-real-per-epoch", int),
        ("s-batch-size", int), ("s-min-steps", int), ("s-max-steps", int), ("s-noise-dim", int), ("reference-epochs", int),
    ):  # fmt: skip
        p.add_argument(f"--{name}", type=kind, default=None, help=f"EfficiencyConfig{'.loop' if name.startswith('s-') else ''}.{name.replace('-', '_')} (0 = all for *-digits / *-per-epoch)")
    return p.parse_args(argv)


LOOP_KEYS = ("s_batch_size", "s_min_steps", "s_max_steps", "s_noise_dim")
"""Options that set EfficiencyConfig.loop's fields; the others set EfficiencyConfig's own."""


def build_config(args: argparse.Namespace) -> EfficiencyConfig:
    overrides: dict = {}
    for key in ("seed", "train_digits", "test_digits", "base_epochs", "steps", "terse_steps", "step_size", "finetune_epochs",
                "finetune_real_per_epoch", "reference_epochs"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            overrides[key] = None if (value == 0 and key in ("train_digits", "test_digits", "finetune_real_per_epoch")) else value
    base = EfficiencyConfig.quick() if args.quick else EfficiencyConfig()
    loop = {k: getattr(args, k) for k in LOOP_KEYS if getattr(args, k) is not None}
    if loop:
        overrides["loop"] = base.loop.model_copy(update=loop)
    return base.model_copy(update=overrides) if overrides else base


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
