"""Standalone repro of the oneDNN AVX2 strided-1x1 backward defect, with and without synthloop's guard.

Each trial runs 50 forward/backward passes of a 1x1 stride-2 convolution on channels-last input in
a fresh subprocess with ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's AVX2 kernels on any x86 CPU; on an
AVX2-only CPU they are the default) and records how it ended: ``ok``, ``hang`` (timeout),
``abort``/``bus error``/``segfault`` (signal) or another exit code. Also one control per trial:
the same passes with contiguous (NCHW) input and no guard.

    python benchmarks/onednn_repro.py [--trials 5]   ->  benchmarks/results/onednn_repro.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap

from common import write_result

CODE = """
import sys, torch
from synthloop.models.cpu_backend import guard_strided_1x1_convs
conv = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False)
variant = sys.argv[1]
if variant == "guarded":
    guard_strided_1x1_convs(conv)
for _ in range(50):
    x = torch.rand(4, 4, 28, 28)
    if variant != "nchw":
        x = x.contiguous(memory_format=torch.channels_last)
    conv(x.requires_grad_()).sum().backward()
print("ok")
"""

VARIANTS = ("unguarded", "guarded", "nchw")


def trial(variant: str, timeout: float) -> str:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(CODE), variant], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    if r.returncode == 0:
        return "ok"
    if r.returncode < 0:
        return {signal.SIGABRT: "abort", signal.SIGBUS: "bus error", signal.SIGSEGV: "segfault"}.get(-r.returncode, f"signal {-r.returncode}")
    return f"exit {r.returncode}"


def run(trials: int, timeout: float) -> dict:
    outcomes = {v: [trial(v, timeout) for _ in range(trials)] for v in VARIANTS}
    return {
        "trials": trials,
        "timeout_s": timeout,
        "outcomes": outcomes,
        "failures": {v: sum(o != "ok" for o in outs) for v, outs in outcomes.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    res = run(args.trials, args.timeout)
    print(f"{'variant':<10} {'failed':>7}  outcomes")
    for v in VARIANTS:
        print(f"{v:<10} {res['failures'][v]:>4}/{args.trials}  {', '.join(res['outcomes'][v])}")
    print(write_result("onednn_repro", res))


if __name__ == "__main__":
    main()
