"""Fuzz every reader of untrusted files with hypothesis and count what it does with broken input.

Targets (see ``tests/data/fuzz_cases.py``): COCO, YOLO and VOC readers, YAML configs of every job,
``params.jsonl`` replay records and checkpoints. A case is a structurally plausible but broken
input; every failure must be an :class:`~synthloop.errors.InputError` naming the file (and the
field): ``crashes`` counts other exceptions, ``unclear_errors`` InputErrors that name no file of
the case.

    python benchmarks/reliability_fuzz.py                  # 10,200 cases (1,700 per target)
    python benchmarks/reliability_fuzz.py --cases 300 --no-write --show 3   # a quick look

Writes ``benchmarks/results/reliability_fuzz.json``:
``{"fuzz": {"cases", "crashes", "unclear_errors", "per_target": {name: {cases, ok, clear, clear_with_field, unclear, crash, seconds, examples}}}}``
(``clear_with_field``: the clear errors that also name a field, line or element).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "data"), str(ROOT)]

from fuzz_cases import TARGETS, run_case

from benchmarks.common import write_result


def fuzz_target(name: str, cases: int, *, seed: int, show: int = 0) -> dict:
    """Run ``cases`` generated cases of target ``name``; counts per outcome and a few examples."""
    target = TARGETS[name]
    counts: collections.Counter[str] = collections.Counter()
    examples: list[str] = []

    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), derandomize=False)
    @hypothesis_seed(seed)
    @given(case=target.cases)
    def one(case):
        outcome, exc = run_case(target, case)
        counts[outcome] += 1
        counts["clear_with_field"] += outcome == "clear" and bool(getattr(exc, "field", None) or ": field " in str(exc))
        if outcome in ("crash", "unclear") and len(examples) < max(show, 5):
            tb = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f" at {Path(tb.filename).name}:{tb.lineno}" if tb else ""
            examples.append(f"{outcome}: {type(exc).__name__}{at}: {str(exc)[:300]}")

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one()
    seconds = time.perf_counter() - t0
    return {
        "cases": sum(counts[k] for k in ("ok", "clear", "unclear", "crash")),
        **{k: counts.get(k, 0) for k in ("ok", "clear", "clear_with_field", "unclear", "crash")},
        "seconds": round(seconds, 1),
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1700, help="cases per target (6 targets)")
    ap.add_argument("--targets", nargs="*", default=sorted(TARGETS), choices=sorted(TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=0, help="print this many crash / unclear examples per target")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the result file")
    args = ap.parse_args(argv)

    per_target = {}
    for name in args.targets:
        per_target[name] = r = fuzz_target(name, args.cases, seed=args.seed, show=args.show)
        print(
            f"{name:11s} {r['cases']:6d} cases  ok {r['ok']:5d}  clear {r['clear']:5d}  unclear {r['unclear']:3d}  crash {r['crash']:3d}  {r['seconds']:7.1f} s",
            flush=True,
        )
        for line in r["examples"][: args.show]:
            print("   ", line)
    fuzz = {
        "cases": sum(r["cases"] for r in per_target.values()),
        "crashes": sum(r["crash"] for r in per_target.values()),
        "unclear_errors": sum(r["unclear"] for r in per_target.values()),
        "per_target": per_target,
    }
    print(f"total {fuzz['cases']} cases, {fuzz['crashes']} crashes, {fuzz['unclear_errors']} unclear errors")
    if not args.no_write:
        print("wrote", write_result("reliability_fuzz", {"fuzz": fuzz}))
    return fuzz


if __name__ == "__main__":
    main()
