"""A canvas or batch that would not fit in memory is refused up front, with the estimate."""

from __future__ import annotations

import pytest

from synthloop.errors import InputError
from synthloop.jobs.paste import run_paste
from synthloop.jobs.paste_config import load_paste_config
from synthloop.jobs.render import RenderJobConfig, write_dataset
from synthloop.render import bundled_font_dir
from synthloop.utils import memory
from synthloop.utils.memory import canvas_bytes, check_fits


def test_check_fits_gives_the_estimate():
    check_fits(10 * 2**20, what="x", field="f", available=2**30)
    with pytest.raises(InputError, match=r"field f: x needs about 2.0 GiB of memory but only 1.0 GiB is available"):
        check_fits(2 * 2**30, what="x", field="f", available=2**30)
    assert canvas_bytes(10, 20, 3) == 10 * 20 * 3 * memory.BYTES_PER_CANVAS_PIXEL
    assert memory.available_memory() > 0


def test_paste_refuses_a_huge_canvas_before_writing(tmp_path):
    cfg = load_paste_config(None, ["num_images=1", "scene.canvas=[200000,200000]", "backgrounds.sources=[gradient]"])
    with pytest.raises(InputError, match=r"scene.canvas: a 200000x200000 canvas in each of 2 worker\(s\) needs about .* GiB"):
        run_paste(cfg, tmp_path / "out", workers=2)
    assert not (tmp_path / "out").exists()


def test_render_refuses_a_huge_batch(tmp_path):
    cfg = RenderJobConfig(fonts=[str(bundled_font_dir() / "DejaVuSans.ttf")], size=(4096, 4096), batch_size=100_000, count=1)
    with pytest.raises(InputError, match=r"field batch_size: 100000 4096x4096 image\(s\).* needs about"):
        write_dataset(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_terse_detection_refuses_a_huge_batch(tmp_path):
    import test_terse_detection_job as t  # tests/jobs is on sys.path

    from synthloop.jobs.terse_detection import run_terse_detection_job

    cfg = t.job_config(tmp_path, image_size=16384, eval_batch_size=4096)
    with pytest.raises(InputError, match=r"field image_size: a batch of 4096 16384x16384 images needs about"):
        run_terse_detection_job(cfg, tmp_path / "out")
