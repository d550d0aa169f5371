import json

import numpy as np
from PIL import Image
from refine_helpers import TINY, _config, _folder, data  # noqa: F401  (data is a fixture)
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.loops.refine.divergence import DivergenceConfig

runner = CliRunner()


def test_refine_command_end_to_end(data):
    tmp_path, syn, real = data
    cfg = _config(tmp_path, syn, real)
    out = tmp_path / "out"
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "label preservation" in r.output and "step 3/3" in r.output
    for name in ("config.yaml", "checkpoint.pt", "losses.json", "events.json", "metrics.json"):
        assert (out / name).is_file(), name
    refined = sorted(p.relative_to(out / "refined").as_posix() for p in (out / "refined").rglob("*.png"))
    assert refined == sorted(p.relative_to(syn).as_posix() for p in syn.rglob("*.png"))
    assert Image.open(out / "refined" / "one" / "one_0.png").size == (28, 28)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["foreground_iou_from_masks"] is True
    assert 0 <= metrics["label_preservation"] <= 1 and set(metrics["label_preservation_per_class"]) == {"one", "two"}
    assert 0 <= metrics["foreground_iou"] <= 1
    losses = json.loads((out / "losses.json").read_text())
    assert [h["step"] for h in losses] == [1, 2, 3] and "bg_syn" in losses[0]

    # the output folder is protected; resuming a finished run only rewrites the results
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(out)])
    assert r.exit_code == 2 and "--resume" in r.output
    r = runner.invoke(app, ["refine", str(cfg), "log_every=5", "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert "resumed cyclegan at step 3/3" in r.output
    r = runner.invoke(app, ["refine", str(cfg), "cyclegan.lambda_cycle=5", "--out", str(out), "--resume"])
    assert r.exit_code == 2 and "cyclegan.lambda_cycle" in r.output
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(tmp_path / "fresh"), "--resume"])
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_mrgan_and_pixelda_through_the_command(data):
    tmp_path, syn, real = data
    stage = {**TINY, "steps": 1, "pretrain_g_steps": 1, "pretrain_d_steps": 0, "g_updates_per_step": 1}
    cfg = _config(tmp_path, syn, real, method="mrgan", mrgan={"stage1": stage, "stage2": stage, "stage2_mode": "rr_rs"})
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(tmp_path / "mr")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "mr" / "real_mapped").rglob("*.png"))) == 6
    assert len(list((tmp_path / "mr" / "refined").rglob("*.png"))) == 8
    pix = {
        "generator": {"base_channels": 4, "n_blocks": 1},
        "discriminator": {"width": 0.0625},
        "classifier": {"widths": [4], "blocks_per_stage": 1},
        "batch_size": 4,
        "steps": 2,
    }
    cfg = _config(tmp_path, syn, real, method="pixelda", pixelda=pix)
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(tmp_path / "pix")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "pix" / "metrics.json").read_text())
    assert 0 <= metrics["pixelda_task_accuracy_real"] <= 1


def test_bad_inputs_are_clear_errors(data):
    tmp_path, syn, real = data
    other = _folder(tmp_path / "other", ["one", "three"], 2, seed=2)
    r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, other)), "--out", str(tmp_path / "o1")])
    assert r.exit_code == 2
    assert "different class subfolders" in r.output and "two" in r.output and "three" in r.output
    assert not (tmp_path / "o1").exists()  # nothing written for a run that could not start
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, tmp_path / "empty")), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "real folder is empty" in r.output
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(real / "one" / "big.png")
    r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, real)), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "big.png" in r.output and "same size" in r.output
    r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, real, cyclegan={"stepz": 3})), "--out", str(tmp_path / "o4")])
    assert r.exit_code == 2 and "stepz" in r.output


def test_divergence_stops_the_command_and_is_recorded(data):
    tmp_path, syn, real = data
    cfg = _config(tmp_path, syn, real, divergence={"min_batch_std": 10.0})  # any batch counts as collapsed
    out = tmp_path / "div"
    r = runner.invoke(app, ["refine", str(cfg), "--out", str(out)])
    assert r.exit_code == 2 and "mode collapse" in r.output
    events = json.loads((out / "events.json").read_text())
    assert [e["kind"] for e in events] == ["mode_collapse"] and events[0]["step"] == 0
    assert not (out / "refined").exists()
    r = runner.invoke(app, ["refine", str(cfg), "divergence.action=record", "--out", str(tmp_path / "div2")])
    assert r.exit_code == 0, r.output
    assert "1 divergence event(s)" in r.output
    assert DivergenceConfig().action == "raise"


def test_resume_of_a_run_killed_before_its_first_checkpoint(data):
    """A kill -9 before the first checkpoint leaves a folder with (at most) config.yaml and a
    half-written temp file: --resume starts again from step 0, removes the temp file and writes
    what an uninterrupted run writes (regressions found by benchmarks/reliability.py)."""
    tmp_path, syn, real = data
    cfg = _config(tmp_path, syn, real, evaluation={"enabled": False})
    ref = tmp_path / "ref"
    assert runner.invoke(app, ["refine", str(cfg), "--out", str(ref)]).exit_code == 0
    for name, keep in (("killed_early", ["config.yaml"]), ("killed_at_start", [])):
        out = tmp_path / name
        out.mkdir()
        for f in keep:
            (out / f).write_bytes((ref / f).read_bytes())
        (out / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # killed mid-write
        r = runner.invoke(app, ["refine", str(cfg), "--out", str(out), "--resume"])
        assert r.exit_code == 0 and "starting from step 0" in r.output, r.output
        assert not list(out.rglob("*.tmp"))  # regression: the killed writer's temp file stayed
        refined = sorted(p.relative_to(out).as_posix() for p in (out / "refined").rglob("*.png"))
        assert refined and all((out / f).read_bytes() == (ref / f).read_bytes() for f in refined)
    (tmp_path / "killed_early" / "checkpoint.pt").unlink()
    r = runner.invoke(app, ["refine", str(cfg), "cyclegan.lambda_cycle=5", "--out", str(tmp_path / "killed_early"), "--resume"])
    assert r.exit_code == 2 and "cyclegan.lambda_cycle" in r.output


def test_a_run_stopped_by_bad_input_leaves_nothing_behind(data):
    """Mismatched class folders stop the run before it writes: the output folder is not created
    (or, made empty before, stays empty), so the corrected command runs in it as it is."""
    tmp_path, syn, real = data
    other = _folder(tmp_path / "other", ["one", "three"], 2, seed=2)
    for out in (tmp_path / "new", tmp_path / "made_empty"):
        if out.name == "made_empty":
            out.mkdir()
        r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, other, evaluation={"enabled": False})), "--out", str(out)])
        assert r.exit_code == 2 and "different class subfolders" in r.output
        assert not out.exists() or not any(out.iterdir())
    for out in (tmp_path / "new", tmp_path / "made_empty"):
        r = runner.invoke(app, ["refine", str(_config(tmp_path, syn, real, evaluation={"enabled": False})), "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert len(list((out / "refined").rglob("*.png"))) == 8
