"""Crash safety and faults, measured: ``make bench-reliability`` -> ``benchmarks/results/reliability.json``.

**kill -9**: for tiny configs of ``synthloop paste`` (2 workers), ``render``, ``terse-train``,
``terse`` (detection) and ``refine``: one uninterrupted reference run, then trials that start the
command in its own process group, SIGKILL the group at a random (seeded) moment, rerun it with
``--resume`` (``render`` is staged and has no resume: the output must be absent or complete, then
it is rerun) and compare with the reference: images, annotation files and other outputs
byte-identical, JSON records and checkpoints equal once timings and timestamps are left out
(where the code promises determinism), no temporary files left (``.*.tmp``, ``.work/``, staging
folders, the run lock), no duplicate image or annotation ids.

**faults**: the NaN/Inf, disk-full and memory injections of ``tests/loops/test_faults.py``,
``tests/jobs/test_disk_full.py`` and ``tests/jobs/test_memory_limits.py``, run here as a
benchmark: each test is one injection; ``detected`` when the run stopped or skipped with the
clear error, ``recovered`` when it then resumed to the reference output (the tests assert both).

The ``fuzz`` and ``cpu_backend_workaround`` sections are copied from
``benchmarks/results/reliability_fuzz.json`` and ``benchmarks/results/onednn_repro.json`` when
those exist (``make bench-reliability`` runs their scripts first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, write_result

from synthloop.utils.run_compare import differences, duplicate_ids, leftovers

SYNTHLOOP = [sys.executable, "-c", "import sys; from synthloop.cli import app; sys.argv[0] = 'synthloop'; app()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


# ------------------------------------------------------------------------------ the commands


def _refine_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for domain, n, lo in (("syn", 4, 0), ("real", 3, 20)):
        for c, name in enumerate(("one", "two")):
            for i in range(n):
                img = rng.integers(lo, lo + 40, (28, 28), dtype=np.uint8)
                m = np.zeros((28, 28), np.uint8)
                m[4 + 4 * c : 14 + 4 * c, 6:20] = 255
                img[m > 0] = 230
                for folder, arr in ((root / domain / name, img), (root / f"{domain}_masks" / name, m)):
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(folder / f"{name}_{i}.png")
    cfg = {
        "method": "cyclegan",
        "seed": 0,
        "device": "cpu",
        "data": {"synthetic": str(root / "syn"), "real": str(root / "real"), "synthetic_masks": str(root / "syn_masks")},
        "cyclegan": {"generator": {"base_channels": 4, "n_blocks": 1}, "discriminator": {"width": 0.0625}, "batch_size": 4, "steps": 30},
        "checkpoint_every": 3,
        "log_every": 10,
        "evaluation": {"classifier_steps": 5, "batch_size": 4, "classifier": {"widths": [4, 8], "blocks_per_stage": 1}},
    }
    path = root / "refine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _render_config(root: Path) -> Path:
    from synthloop.render import bundled_font_dir

    cfg = {
        "fonts": [str(bundled_font_dir() / "DejaVuSans.ttf")],
        "background": {"enabled": False},
        "occlusion": {"enabled": False},
        "count": 240,
        "batch_size": 16,
        "seed": 0,
    }
    path = root / "render.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def commands(root: Path) -> dict[str, dict[str, Any]]:
    """name -> {"argv": [...] without --out, "resume": flag or None}."""
    root.mkdir(parents=True, exist_ok=True)
    paste = ["paste", str(ROOT / "examples" / "paste_builtin.yaml"), "num_images=24", "scene.canvas=[64,80]", "backgrounds.pool=2", "chunk_size=2", "--workers", "2", "-q"]
    terse_train = [
        "terse-train", "train_digits=300", "test_digits=200", "base_epochs=1", "loop.cycles=3", "loop.hard_per_class=2",
        "loop.s_batch_size=32", "loop.s_max_steps=3", "loop.t_epochs=1", "loop.t_batch_size=64",
    ]  # fmt: skip
    terse = [
        "terse", str(ROOT / "examples" / "terse_detection" / "tiny_coco.yaml"), "image_size=[48,64]", "baseline.epochs=1",
        "loop.cycles=3", "loop.s_steps=2", "loop.hard_per_cycle=3", "loop.max_candidates_per_cycle=8", "loop.t_epochs=1",
        "loop.fg_size=24", "report.samples_per_cycle=2", "report.real_samples=1", "-q",
    ]  # fmt: skip
    return {
        "paste": {"argv": paste, "resume": "--resume"},
        "render": {"argv": ["render", str(_render_config(root))], "resume": None},
        "terse-train": {"argv": terse_train, "resume": "--resume"},
        "terse": {"argv": terse, "resume": "--resume"},
        "refine": {"argv": ["refine", str(_refine_data(root / "refine_data"))], "resume": "--resume"},
    }


# ------------------------------------------------------------------------------ the trials


def run(argv: list[str], out: Path, cwd: Path, timeout: float = 600) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([*SYNTHLOOP, *argv, "--out", str(out)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, time.perf_counter() - t0, (proc.stdout + proc.stderr)[-2000:]


def kill_at(argv: list[str], out: Path, cwd: Path, delay: float) -> float | None:
    """Start the command in its own process group and SIGKILL the group after ``delay`` s; ``None``
    if it was still running then, else how long it took."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*SYNTHLOOP, *argv, "--out", str(out)], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def trial(name: str, spec: dict[str, Any], ref: Path, ref_seconds: float, work: Path, rng: random.Random, index: int) -> dict[str, Any]:
    """One kill -9 at a random moment within ``ref_seconds`` (the expected run time), then the rerun."""
    out = work / f"{name}-trial{index}"
    delay = rng.uniform(0.15, 0.85) * ref_seconds
    finished_in = kill_at(spec["argv"], out, work, delay)
    killed = finished_in is None
    row: dict[str, Any] = {"kill_after_s": round(delay, 2), "killed_running": killed}
    if not killed:
        row["finished_in_s"] = round(finished_in, 2)
    if spec["resume"] is None:  # render: staged, no resume; the output is absent or complete, never partial
        present = out.is_dir() and any(p.name != ".synthloop.lock" for p in out.iterdir())
        row["after_kill"] = "complete" if present and not differences(ref, out) else ("partial" if present else "absent")
        rc, seconds, log = run([*spec["argv"], "--overwrite"], out, work)
    else:  # as a supervisor would: resume when the killed run left its folder, else start again
        rc, seconds, log = run([*spec["argv"], *([spec["resume"]] if out.exists() else [])], out, work)
    row.update(rerun_rc=rc, rerun_s=round(seconds, 2))
    if rc != 0:
        row["rerun_log"] = log
    row["differences"] = differences(ref, out) if rc == 0 else ["<rerun failed>"]
    row["leftover_temp_files"] = leftovers(out)
    row["duplicate_ids"] = duplicate_ids(out) if out.is_dir() else 0
    row["identical"] = rc == 0 and not row["differences"] and row.get("after_kill") != "partial"
    return row


def kill9(work: Path, trials: dict[str, int], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = []
    for name, spec in commands(work / "inputs").items():
        n = trials.get(name, 0)
        if n <= 0:
            continue
        ref = work / f"{name}-reference"
        rc, ref_s, log = run(spec["argv"], ref, work)
        if rc != 0:
            raise SystemExit(f"{name}: the reference run failed:\n{log}")
        print(f"{name}: reference {ref_s:.1f} s", flush=True)
        results, expected = [], ref_s
        for i in range(n):
            r = trial(name, spec, ref, expected, work, rng, i)
            expected = min(expected, r.get("finished_in_s", expected))  # the machine's load varies: aim inside a real run
            print(f"  trial {i}: kill at {r['kill_after_s']} s (running: {r['killed_running']}), identical: {r['identical']} {r['differences'][:3]} {r['leftover_temp_files'][:3]}", flush=True)
            results.append(r)
            if r["identical"] and not r["leftover_temp_files"]:
                shutil.rmtree(work / f"{name}-trial{i}", ignore_errors=True)
        rows.append(
            {
                "command": f"synthloop {name}",
                "reference_s": round(ref_s, 2),
                "trials": n,
                "killed_while_running": sum(r["killed_running"] for r in results),
                "identical": sum(r["identical"] for r in results),
                "leftover_temp_files": sum(len(r["leftover_temp_files"]) for r in results),
                "duplicate_ids": sum(r["duplicate_ids"] for r in results),
                **({"after_kill": {k: sum(r.get("after_kill") == k for r in results) for k in ("absent", "complete", "partial")}} if spec["resume"] is None else {}),
                "runs": results,
            }
        )
    return {
        "trials": sum(r["trials"] for r in rows),
        "identical": sum(r["identical"] for r in rows),
        "killed_while_running": sum(r["killed_while_running"] for r in rows),
        "leftover_temp_files": sum(r["leftover_temp_files"] for r in rows),
        "duplicate_ids": sum(r["duplicate_ids"] for r in rows),
        "seed": seed,
        "commands": rows,
    }


# ------------------------------------------------------------------------------ faults


FAULT_TESTS = ["tests/loops/test_faults.py", "tests/jobs/test_disk_full.py", "tests/jobs/test_memory_limits.py"]
# tests that inject a fault and then resume to the reference output (the others stop or skip cleanly)
RECOVERING = ("stops_records_and_resumes", "s_step_skips_and_d_t_stop", "resumes_identically", "keeps_the_old_file", "gradient_fault", "within_the_step")
# (memory refusals stop before anything runs: detected, with nothing to recover)
NOT_INJECTIONS = ("test_helpers", "test_events_file", "test_storage_error_pickles", "test_check_fits_gives_the_estimate", "test_remove_stray_temps")


def faults(work: Path) -> dict[str, Any]:
    report = work / "faults.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", f"--junitxml={report}", *FAULT_TESTS]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900, check=False)
    import xml.etree.ElementTree as ET

    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        if name.startswith(NOT_INJECTIONS):
            continue
        ok = not any(child.tag in ("failure", "error", "skipped") for child in case)
        cases.append({"test": f"{case.get('classname')}::{name}", "detected": ok, "recovered": ok and any(k in name for k in RECOVERING)})
    return {
        "injected": len(cases),
        "detected": sum(c["detected"] for c in cases),
        "recoverable": sum(any(k in c["test"] for k in RECOVERING) for c in cases),  # the rest are refused up front
        "recovered": sum(c["recovered"] for c in cases),
        "lost_outputs": sum(not c["detected"] for c in cases),
        "seconds": round(time.perf_counter() - t0, 1),
        "cases": cases,
    }


def _copied(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc.get("result", doc) if isinstance(doc, dict) else doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", default="paste=5,render=4,terse-train=4,terse=4,refine=5", help="kill trials per command (name=n,...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--name", default="reliability")
    args = ap.parse_args(argv)
    trials = {k: int(v) for k, v in (item.split("=") for item in args.trials.split(",") if item)}
    work = args.work or Path(tempfile.mkdtemp(prefix="synthloop-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result: dict[str, Any] = {"kill9": kill9(work, trials, args.seed)}
        result["faults"] = {"injected": 0, "detected": 0, "recovered": 0, "lost_outputs": 0} if args.no_faults else faults(work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["fuzz"] = _copied("reliability_fuzz.json")
    result["cpu_backend_workaround"] = _copied("onednn_repro.json")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = write_result(args.name, result)
    k, f = result["kill9"], result["faults"]
    print(f"kill -9: {k['identical']}/{k['trials']} identical, {k['leftover_temp_files']} leftover temp files, {k['duplicate_ids']} duplicate ids")
    print(f"faults: {f['injected']} injected, {f['detected']} detected, {f['recovered']} recovered, {f['lost_outputs']} lost outputs")
    print(f"wrote {path}")
    ok = k["identical"] == k["trials"] and k["leftover_temp_files"] == 0 and k["duplicate_ids"] == 0 and f["lost_outputs"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
