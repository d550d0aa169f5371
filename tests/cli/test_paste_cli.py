import json
import re

import numpy as np
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.data.images import load_image

runner = CliRunner()
TINY = ["num_images=3", "scene.canvas=[48,64]", "instances.limit=200", "backgrounds.sources=[gradient]"]


def write_config(tmp_path, text="seed: 3\nscene:\n  objects: [1, 3]\n"):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(text)
    return cfg


def test_paste_then_replay_then_vis(tmp_path):
    cfg, out = write_config(tmp_path), tmp_path / "out"
    r = runner.invoke(app, ["paste", str(cfg), *TINY, "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "wrote 3 images" in r.output
    assert len(list((out / "images").glob("*.jpg"))) == 3 and (out / "annotations.json").is_file()
    assert json.loads((out / "run.json").read_text())["seed"] == 3

    r = runner.invoke(app, ["replay", str(out), "2", "--out", str(tmp_path / "re.png")])
    assert r.exit_code == 0, r.output
    assert "images/000002.jpg: replays bit-identically from its params (params.jsonl)" in r.output
    assert "(JPEG) vs stored file: bytes identical, decoded pixels identical" in r.output
    assert "labels rebuilt from the params vs annotations.json: identical" in r.output
    # the JPEG-vs-raw number says what it compares and why it is not 0 (it used to read "max |stored - raw render| = 224" next to "identical")
    jpeg_line = next(line for line in r.output.splitlines() if "stored JPEG vs raw render before encoding" in line)
    assert re.search(r"max \|difference\| \d+, mean \d+\.\d\d \(of 255\)", jpeg_line) and "compression loss (expected" in jpeg_line
    assert "max |stored - raw render|" not in r.output
    assert load_image(tmp_path / "re.png").shape == (48, 64, 3)

    (out / "images" / "000002.jpg").write_bytes((out / "images" / "000001.jpg").read_bytes())
    r = runner.invoke(app, ["replay", str(out), "2"])
    assert r.exit_code == 1 and "does NOT replay identically" in r.output and "bytes DIFFERENT" in r.output

    r = runner.invoke(app, ["vis", str(out), "--out", str(tmp_path / "sheet.png"), "--n", "2", "--tile", "64"])
    assert r.exit_code == 0, r.output
    sheet = load_image(tmp_path / "sheet.png")
    assert sheet.shape[1] == 2 * 68 + 4 and sheet.std() > 10


def test_non_empty_out_needs_resume_or_overwrite(tmp_path):
    cfg, out = write_config(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    r = runner.invoke(app, ["paste", str(cfg), *TINY, "--out", str(out), "-q"])
    assert r.exit_code == 2
    assert "not empty" in r.output and "--resume" in r.output and "--overwrite" in r.output
    assert not (out / "images").exists()
    r = runner.invoke(app, ["paste", str(cfg), *TINY, "--out", str(out), "-q", "--overwrite"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["paste", str(cfg), *TINY, "--out", str(out), "-q", "--resume"])
    assert r.exit_code == 0 and "wrote 3 images to" in r.output  # nothing left to do


def test_bad_key_lists_the_valid_keys(tmp_path):
    cfg = write_config(tmp_path, "scene:\n  canvass: [10, 10]\n")
    r = runner.invoke(app, ["paste", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "job.yaml: field scene.canvass: unknown key; valid keys here:" in text
    assert "canvas" in text and "min_visibility" in text and "Traceback" not in r.output
    r = runner.invoke(app, ["paste", str(write_config(tmp_path)), "scene.blend.modes=[sharp]", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown blend mode" in r.output
    assert not (tmp_path / "o").exists()


def test_demo_writes_images_and_a_contact_sheet(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["paste-demo", "--out", str(out), "--num-images", "3"])
    assert r.exit_code == 0, r.output
    assert "contact sheet:" in r.output and "synthloop replay" in r.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert load_image(out / "images" / "000000.jpg").shape == (256, 256, 3)
    sheet = load_image(out / "contact_sheet.png")
    assert sheet.ndim == 3 and np.asarray(sheet).std() > 10
    # running it again replaces the previous demo; a foreign folder is refused
    assert runner.invoke(app, ["paste-demo", "--out", str(out), "--num-images", "2"]).exit_code == 0
    assert len(list((out / "images").iterdir())) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    r = runner.invoke(app, ["paste-demo", "--out", str(other)])
    assert r.exit_code != 0 and (other / "mine.txt").is_file()


def test_warnings_are_one_clean_line(capsys):
    import warnings

    from synthloop.cli._app import warning_line

    warning_line(UserWarning("box-only annotations: feathered boxes"), UserWarning, "/x/y.py", 12, line="    warnings.warn(...)")
    err = capsys.readouterr().err
    assert err.strip() == "warning: box-only annotations: feathered boxes" and "y.py" not in err
    assert warnings.showwarning is not None


def test_paste_demo_can_be_quiet(tmp_path):
    r = runner.invoke(app, ["paste-demo", "--out", str(tmp_path / "d"), "--num-images", "2", "-q", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "demo" not in r.output.split("wrote")[0].replace("torch threads", "")  # no progress bar text before the summary


def _coco_of_coins(root, missing=False):
    from PIL import Image

    root.mkdir(parents=True)
    if not missing:
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(root / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]], "area": 64, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "coin"}],
    }
    (root / "annotations.json").write_text(json.dumps(ann))
    return root / "annotations.json"


def test_a_missing_coco_image_names_the_json_file_and_field(tmp_path):
    ann = _coco_of_coins(tmp_path / "coins", missing=True)
    r = runner.invoke(
        app, ["paste", str(write_config(tmp_path)), *TINY, f"instances.coco.json={ann}", "instances.builtin=null", "--out", str(tmp_path / "o"), "-q"]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert f"{ann}: field images[0].file_name: image file not found: {tmp_path / 'coins' / 'a.png'}" in text
    assert not (tmp_path / "o").exists()


def test_backgrounds_showing_the_foregrounds_warn_in_one_line_and_can_be_excluded(tmp_path):
    ann = _coco_of_coins(tmp_path / "coins")
    args = ["paste", str(write_config(tmp_path)), *TINY[:2], f"instances.coco.json={ann}", "instances.builtin=null", "backgrounds.sources=[photos]", "-q"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "o1")])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("warning:")]
    expected = (
        "warning: built-in background photo 'coins' shows objects like the foreground category 'coin' (instances.coco), "
        "which would appear unlabelled in the backgrounds; leave it out with backgrounds.exclude: [coins]"
    )
    assert lines == [expected]
    r = runner.invoke(app, [*args, "backgrounds.exclude=[coins]", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0 and "warning:" not in r.output, r.output
    r = runner.invoke(app, [*args, "backgrounds.exclude=[coin]", "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "<command line>: field backgrounds.exclude: unknown built-in photo 'coin'; valid names:" in " ".join(r.output.split())
