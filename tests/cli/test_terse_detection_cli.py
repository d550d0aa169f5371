"""``synthloop terse CONFIG.yaml``: runs the example on its tiny COCO data, resumes, and turns bad
input into a one-paragraph error (exit code 2, no traceback)."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.jobs.terse_detection_config import load_job_config

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "terse_detection"

# the tiny_coco example cut down to seconds: a narrow detector, a 48x64 canvas, one short cycle
FAST = [
    "image_size=[48,64]", "baseline.epochs=1", "model.args.width=4", "model.args.head_convs=1",
    "loop.cycles=1", "loop.s_steps=1", "loop.batch_size=2", "loop.hard_per_cycle=2", "loop.max_candidates_per_cycle=4",
    "loop.t_epochs=1", "loop.fg_size=16", "loop.s_channels=[4,8]", "loop.s_branch_channels=8", "loop.s_input_size=32",
    "loop.d_width=0.125", "report.samples_per_cycle=2", "report.real_samples=2", "report.scale=1",
]  # fmt: skip


def test_examples_are_valid_configs():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cfg = load_job_config(path)
        assert cfg.loop.cycles >= 1, path
    tiny = load_job_config(EXAMPLES / "tiny_coco.yaml")
    assert tiny.real.annotations.is_file() and tiny.foregrounds.source == "real"


def test_terse_runs_the_tiny_example_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), *FAST, "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    assert "fine-tuned after 1 cycles: AP50" in first.output and "report:" in first.output
    for name in ("report.html", "model.pt", "model.json", "synthetic/annotations.json", "config.resolved.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert "training set" in metrics["eval_set_kind"]  # no eval set given: AP on the real set, and said so
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["loop"]["cycles"] == 1

    again = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), *FAST, "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output

    # one more cycle on the finished run
    more = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), *FAST, "loop.cycles=2", "--out", str(out), "--resume", "--quiet"])
    assert more.exit_code == 0, more.output
    assert "fine-tuned after 2 cycles" in more.output
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


def test_bad_input_is_a_clear_error(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"real": {"annotations": "missing.json"}, "lop": {}}))
    typo = runner.invoke(app, ["terse", str(cfg), "--out", str(tmp_path / "o")])
    assert typo.exit_code == 2 and "Traceback" not in typo.output
    assert str(cfg) in typo.output and "lop" in typo.output and "unknown key" in typo.output

    cfg.write_text(yaml.safe_dump({"real": {"annotations": "missing.json"}}))
    missing = runner.invoke(app, ["terse", str(cfg), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "missing.json" in missing.output and "not found" in missing.output

    bad_classes = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), "model.num_classes=11", "--out", str(tmp_path / "o")])
    assert bad_classes.exit_code == 2 and "model.num_classes" in bad_classes.output and "3 categories" in bad_classes.output
    assert not (tmp_path / "o").exists()


def test_a_run_stopped_by_bad_input_leaves_nothing_behind(tmp_path):
    """A truncated background image is only decoded once the loop draws it, after the run wrote its
    config, run.json and baseline: those are removed, so the corrected command runs in the same
    folder (it used to fail with "the output folder is not empty")."""
    import numpy as np
    from PIL import Image

    bgs = tmp_path / "bgs"
    bgs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(bgs / "a.jpg")
    data = (bgs / "a.jpg").read_bytes()
    (bgs / "a.jpg").write_bytes(data[: len(data) * 2 // 3])  # the header is intact
    out = tmp_path / "o"
    bad = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), *FAST, f"backgrounds=[{bgs}]", "--out", str(out), "--quiet"])
    assert bad.exit_code == 2 and "a.jpg" in bad.output and "truncated" in bad.output and "Traceback" not in bad.output
    assert not out.exists()
    fixed = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), *FAST, "--out", str(out), "--quiet"])
    assert fixed.exit_code == 0, fixed.output
    assert (out / "report.html").is_file()


def test_summary_names_every_eval_set_and_plausibility(tmp_path, monkeypatch):
    """With several named eval sets the command prints one before/after line per set, and the
    plausibility fractions when they were measured (the job itself is tested in tests/jobs)."""
    from synthloop.jobs import terse_detection

    ap = lambda v: {"ap50": v, "ap60": v, "ap70": v, "ap80": v / 2, "ap": v / 3}
    sets = {"val": {"images": 4, "baseline": ap(0.5), "finetuned": ap(0.6)}, "shifted": {"images": 3, "baseline": ap(0.2), "finetuned": ap(0.1)}}
    plaus = {"reference": "teacher", "plausible_fraction": 0.75, "hard_plausible_fraction": 0.125}

    def fake_job(cfg, out_dir, **kwargs):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"eval_images": 4}))
        return terse_detection.TerseDetectionJobResult(out_dir, ap(0.5), ap(0.6), [{}], 7, {}, eval_sets=sets, plausibility=plaus)

    monkeypatch.setattr(terse_detection, "run_terse_detection_job", fake_job)
    res = runner.invoke(app, ["terse", str(EXAMPLES / "tiny_coco.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "shifted (3 images): baseline AP50 20.0, AP80 10.0, AP 6.7 -> fine-tuned AP50 10.0, AP80 5.0, AP 3.3" in res.output
    assert "val (4 images): baseline AP50 50.0" in res.output
    assert "plausibility (teacher): 75.0% of the kept objects still detected, 12.5% hard and plausible" in res.output
