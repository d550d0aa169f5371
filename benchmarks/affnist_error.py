"""TERSE Table 1: error of MNISTClassifierDeep trained with the TERSE loop (paper: 0.99%, target
<= 0.90%), see :mod:`synthloop.experiments.affnist`.

Split 55,000 / 5,000 / 10,000 (:func:`synthloop.data.mnist.mnist_split`). The model is trained
on padded MNIST, then with the TERSE loop (S finds 500 hard examples per class per cycle, T
trains on MNIST + every cache). Table 1 is "error on AffNIST", so ``test_error_pct`` is the
error on the **AffNIST-style test set** (the recipe applied with a fixed seed to the 10,000 MNIST
test digits) of the cycle with the lowest error on the AffNIST-style validation set (recipe on
the 5,000 validation digits). ``mnist_test_error_pct`` is the same model's error on the plain
padded MNIST test digits.

Budget (defaults, for ~30-45 min on 2 CPU cores; paper values in brackets): baseline 2 epochs
[not stated], 20 cycles [not stated], 2 T epochs per cycle [30], each T epoch = 20,000 random
MNIST digits + all cached samples [all 55,000], S at most 30 batches of 1024 per cycle [until
the cache is full], lr 1e-3 from cycle 16 [after 100]. Measured on 2 cores: one
MNISTClassifierDeep epoch over 10,000 digits ~5.4 s, evaluation of 10,000 ~3.1 s, one S batch
of 1024 ~1.1 s; estimated full run ~30 min.

Rows (issue 10): ``--method NAME`` runs one row of Table 1 with the loop options of
:data:`synthloop.experiments.affnist_methods.METHODS` (``random``: recipe samples in the same
budget; ``terse_paper``: the paper's S; ...) and writes ``affnist_error_NAME.json``. ``--summarise``
then collects every ``affnist_error_NAME.json`` that ran the same protocol into
``affnist_error.json``: ``rows`` maps each method to its test error and ``test_error_pct`` is the
best learned (non-random) row's.

Usage::

    python benchmarks/affnist_error.py [--quick] [--device cuda] [--cycles 15] [--t-epochs 2] [...]
    python benchmarks/affnist_error.py --method random --threads 1      # one row per process
    python benchmarks/affnist_error.py --method terse_paper --threads 1
    python benchmarks/affnist_error.py --summarise

Writes ``benchmarks/results/affnist_error.json`` (``--quick``: ``affnist_error_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_result  # noqa: E402

from synthloop.experiments.affnist import ErrorConfig, run_error  # noqa: E402
from synthloop.experiments.affnist_methods import METHODS  # noqa: E402

QUICK = dict(base_epochs=1, reference_epochs=1)
QUICK_LOOP = dict(cycles=2, hard_per_class=100, t_epochs=1, t_real_per_epoch=5_000, s_max_steps=5, lr_t_drop_cycle=None)
LOOP_KEYS = (
    "cycles",
    "hard_per_class",
    "t_epochs",
    "t_real_per_epoch",
    "lr_t_drop_cycle",
    "s_batch_size",
    "s_min_steps",
    "s_max_steps",
    "s_noise_dim",
    "t_synthetic_per_epoch",
)
"""Options that set ErrorConfig.loop's fields; the others set ErrorConfig's own."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few minutes on CPU: checks the pipeline, not the number")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run folder (caches per cycle, checkpoint) here")
    p.add_argument("--method", choices=tuple(METHODS), default=None, help="one Table 1 row: the loop options of METHODS[NAME]; writes affnist_error_NAME.json")
    p.add_argument("--summarise", action="store_true", help="collect the affnist_error_NAME.json rows into affnist_error.json and stop")
    for name, kind in (
        ("seed", int), ("base-epochs", int), ("cycles", int), ("hard-per-class", int), ("t-epochs", int),
        ("t-real-per-epoch", int), ("t-synthetic-per-epoch", int), ("lr-t-drop-cycle", int), ("s-batch-size", int), ("s-min-steps", int),
        ("s-max-steps", int), ("s-noise-dim", int), ("reference-epochs", int),
    ):  # fmt: skip
        p.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            help=f"ErrorConfig{'.loop' if name.replace('-', '_') in LOOP_KEYS else ''}.{name.replace('-', '_')} (t-real-per-epoch 0 = all)",
        )
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ErrorConfig:
    values: dict = dict(QUICK) if args.quick else {}
    for key in ("seed", "base_epochs", "reference_epochs"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    loop: dict = dict(QUICK_LOOP) if args.quick else {}
    for key in LOOP_KEYS:
        value = getattr(args, key)
        if value is not None:
            loop[key] = None if (key == "t_real_per_epoch" and value == 0) else value
    if getattr(args, "method", None):
        loop = {**METHODS[args.method], **loop}
    cfg = ErrorConfig(**values)
    return cfg.model_copy(update={"loop": cfg.loop.model_copy(update=loop)}) if loop else cfg


def _protocol(payload: dict) -> dict:
    """A row's configuration without the method's own loop options: rows are comparable when equal."""
    config = json.loads(json.dumps(payload["config"]))
    defaults = ErrorConfig().loop.model_dump(mode="json")
    for key in set().union(*(METHODS[m] for m in METHODS)):
        config["loop"][key] = defaults[key]
    return config


def summarise(results_dir: Path, quick: bool = False) -> dict:
    """Build ``affnist_error.json`` from the ``affnist_error_NAME.json`` rows run under one protocol."""
    prefix = "affnist_error_quick_" if quick else "affnist_error_"
    rows = {}
    for method in METHODS:
        path = results_dir / f"{prefix}{method}.json"
        if path.exists():
            rows[method] = json.loads(path.read_text())
    learned = [m for m in rows if m != "random"]
    if not learned:
        raise SystemExit(f"no learned row among {sorted(p.name for p in results_dir.glob(prefix + '*.json'))} in {results_dir}")
    protocols = {m: _protocol(r) for m, r in rows.items()}
    first = next(iter(protocols.values()))
    differing = [m for m, c in protocols.items() if c != first]
    if differing:
        raise SystemExit(f"rows {differing} ran another protocol than {next(iter(protocols))}: re-run them with the same options")
    best = min(learned, key=lambda m: rows[m]["val_error_pct"])
    payload = {k: v for k, v in rows[best].items() if k not in ("commit", "dirty", "machine")}
    payload.update(
        method=best,
        best_method_rule="the learned row with the lowest AffNIST-style validation error",
        rows={m: r["test_error_pct"] for m, r in rows.items()},
        rows_mnist={m: r["mnist_test_error_pct"] for m, r in rows.items()},
        rows_val={m: r["val_error_pct"] for m, r in rows.items()},
        rows_best_cycle={m: r["best_cycle"] for m, r in rows.items()},
        rows_wall_s={m: r["wall_s"] for m, r in rows.items()},
        rows_commit={m: r.get("commit") for m, r in rows.items()},
        rows_machine={m: r.get("machine") for m, r in rows.items()},
    )
    name = "affnist_error_quick" if quick else "affnist_error"
    path = write_result(name, payload, device=payload.get("device", "cpu"), results_dir=results_dir)
    print(f"{'row':<16}{'test err %':>11}{'val err %':>11}{'MNIST err %':>13}{'cycle':>7}")
    for m in rows:
        print(f"{m:<16}{rows[m]['test_error_pct']:>11.2f}{rows[m]['val_error_pct']:>11.2f}{rows[m]['mnist_test_error_pct']:>13.2f}{rows[m]['best_cycle']:>7}")
    print(f"best learned row: {best} ({rows[best]['test_error_pct']:.2f}%; paper 0.99%) -> {path}")
    return payload


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.summarise:
        return summarise(Path(args.results_dir), quick=args.quick)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    name = "affnist_error_quick" if args.quick else "affnist_error"
    if args.method:
        name = f"{name}_{args.method}"
    start = time.perf_counter()
    result = run_error(cfg, device=args.device, run_dir=args.run_dir, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - start
    payload = {
        "test_error_pct": result.test_error_pct,
        "test_set": "AffNIST-style: the affNIST recipe (fixed seed) applied to the 10,000 MNIST test digits",
        "mnist_test_error_pct": result.mnist_test_error_pct,
        "mnist_test_set": "plain MNIST test digits padded to 40x40",
        "val_error_pct": result.val_error_pct,
        "best_cycle": result.best_cycle,
        "baseline_test_error_pct": result.baseline_test_error_pct,
        "baseline_mnist_test_error_pct": result.baseline_mnist_test_error_pct,
        "paper_test_error_pct": 0.99,
        "target_test_error_pct": 0.90,
        "wall_s": wall,
        "config": cfg.to_dict(),
        "deviations": cfg.deviations(),
        "timings": result.timings,
        "history": result.history,
        "device": args.device,
        "quick": args.quick,
        "method": args.method or "terse_paper",
        "threads": torch.get_num_threads(),
    }
    path = write_result(name, payload, device=args.device, results_dir=Path(args.results_dir))
    print(
        f"AffNIST-style test error {result.test_error_pct:.2f}% (cycle {result.best_cycle}; MNIST-only baseline "
        f"{result.baseline_test_error_pct:.2f}%), plain MNIST test error {result.mnist_test_error_pct:.2f}% | {wall:.0f} s -> {path}"
    )
    return payload


if __name__ == "__main__":
    main()
