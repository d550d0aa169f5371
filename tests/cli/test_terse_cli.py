import io
import json
import re

import torch
from rich.console import Console
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.experiments.affnist import EfficiencyConfig
from synthloop.jobs.demo import run_terse_demo
from synthloop.loops.terse_classification import TerseClassificationConfig

runner = CliRunner()

TINY = [
    "train_digits=300", "test_digits=200", "base_epochs=4", "base_lr=0.05",
    "loop.cycles=2", "loop.hard_per_class=3", "loop.s_batch_size=64", "loop.s_max_steps=4", "loop.t_epochs=1",
    "loop.t_batch_size=32",
]  # fmt: skip


def test_terse_train_stops_resumes_and_exports(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["terse-train", *TINY, "--out", str(out), "--max-cycles", "1"])
    assert first.exit_code == 0, first.output
    assert "stopped after cycle 1 of 2" in first.output
    assert (out / "checkpoint.pt").is_file() and not (out / "target.pt2").exists()

    first_run = (out / "run.json").read_bytes()
    assert json.loads(first_run)["completed_cycles"] == 1 and json.loads(first_run)["all_cycles_done"] is False

    again = runner.invoke(app, ["terse-train", *TINY, "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output
    assert (out / "run.json").read_bytes() == first_run  # refused before anything was replaced

    resumed = runner.invoke(app, ["terse-train", *TINY, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "finished" in resumed.output and "target.pt2" in resumed.output
    run = json.loads((out / "run.json").read_text())
    assert len(run["resumed"]) == 1 and run["started"] == json.loads(first_run)["started"] and run["all_cycles_done"] is True
    history = json.loads((out / "history.json").read_text())
    assert [r["cycle"] for r in history] == [1, 2] and all(0.0 <= r["test_acc"] <= 1.0 for r in history)
    model = torch.export.load(str(out / "target.pt2")).module()
    assert model(torch.rand(3, 1, 40, 40)).shape == (3, 10)
    assert (out / "cycles" / "cycle_002" / "samples.npz").is_file()
    assert (out / "cycles" / "cycle_002" / "grid.png").read_bytes()[:4] == b"\x89PNG"  # the job's figure per cycle


def test_terse_train_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop:\n  ranges:\n    sx: [1.5, 0.5]\n")
    res = runner.invoke(app, ["terse-train", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "ranges.sx" in res.output and "min 1.5 > max 0.5" in res.output
    res = runner.invoke(app, ["terse-train", "loop.typo=3", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "loop.typo" in res.output and "valid keys" in res.output


def test_terse_demo_writes_a_self_contained_report(tmp_path):
    cfg = EfficiencyConfig(
        train_digits=300, test_digits=200, base_epochs=2, steps=2, step_size=50, finetune_epochs=1, finetune_real_per_epoch=300,
        reference_epochs=1, loop=TerseClassificationConfig(s_batch_size=64, s_min_steps=1, s_max_steps=3, hard_margin=0.0),
    )  # fmt: skip
    buf = io.StringIO()
    result = run_terse_demo(tmp_path, config=cfg, console=Console(file=buf, width=140))
    text = buf.getvalue()
    assert "MNIST-only accuracy" in text and f"report: {tmp_path / 'report.html'}" in text
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', page)
    assert len(images) >= 4  # curves, histogram, a grid per TERSE step (+ random)
    assert "Accuracy vs. added samples" in page and "Hardness" in page and "Deviations" in page
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [x for x, _ in summary["random"]] == [0, 50, 100]
    assert all(0.0 <= acc <= 1.0 for _, acc in summary["terse"])
    assert result.summary["mnist_only_acc"] == summary["mnist_only_acc"]
    assert (tmp_path / "target.pt2").is_file() and (tmp_path / "target.json").is_file()


def test_terse_train_stopped_by_bad_input_leaves_nothing_behind(tmp_path):
    """Ten training digits miss some classes: the loop refuses them before anything is written,
    so the corrected command runs in the same folder; the run then records run.json."""
    out = tmp_path / "run"
    bad = runner.invoke(app, ["terse-train", *TINY, "train_digits=10", "base_epochs=0", "--out", str(out)])
    assert bad.exit_code == 2 and "no source digits of class" in bad.output and "Traceback" not in bad.output
    assert not out.exists()
    fixed = runner.invoke(app, ["terse-train", *TINY, "loop.cycles=1", "base_epochs=1", "--out", str(out), "--threads", "1"])
    assert fixed.exit_code == 0, fixed.output
    run = json.loads((out / "run.json").read_text())
    assert run["torch_threads"] == 1 and run["finished"] and run["completed_cycles"] == 1 and run["all_cycles_done"] is True
