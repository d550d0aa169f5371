"""The torch-free paste workers: what they import, and that their output is the in-process output."""

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
from paste_helpers import output_files

from synthloop.jobs import paste as paste_mod
from synthloop.jobs import paste_worker
from synthloop.jobs.paste import run_paste
from synthloop.jobs.paste_config import load_paste_config

BASE = ["num_images=7", "scene.canvas=[40,56]", "scene.objects=[2,4]", "instances.limit=200", "chunk_size=3"]


files = output_files


@pytest.mark.parametrize("module", ["synthloop.jobs.paste_worker", "synthloop.compose.apply", "synthloop.functional.blend", "synthloop.functional"])
def test_importing_the_worker_path_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_exports_still_resolve():
    from synthloop import compose, functional
    from synthloop.compose.sampler import sample_scene
    from synthloop.functional.blend import blend
    from synthloop.functional.geometry import warp

    assert compose.sample_scene is sample_scene and functional.warp is warp and functional.blend is blend
    assert set(compose.__all__) <= set(dir(compose))
    with pytest.raises(AttributeError):
        _ = compose.no_such_name


def test_pool_workers_never_load_torch(tmp_path):
    # the job's own context and initializer (the fork server preloads the worker module)
    out = paste_worker.Output(tmp_path, tmp_path / ".work", "jpg", 90, 0.25)
    with ProcessPoolExecutor(1, mp_context=paste_mod._mp_context(), initializer=paste_worker.init_process, initargs=(out,)) as pool:
        assert pool.submit(paste_worker.torch_loaded).result() is False


@pytest.mark.parametrize(
    "extra",
    [
        ["backgrounds.sources=[gradient,checkers,noise]"],  # a background rendered per scene
        ["backgrounds.sources=[gradient,perlin]", "backgrounds.pool=3", "scene.blend.all_modes=true", "scene.blend.modes=[alpha,gaussian,motion]"],
        ["backgrounds.sources=[checkers]", "scene.blend.modes=[poisson,pyramid,box]", "scene.blend.per=object", "image_format=png"],
    ],
)
@pytest.mark.parametrize("inline_bytes", [64 * 1024, 0])  # digits sent with the tasks / through the file cache
def test_two_torch_free_workers_write_the_in_process_bytes(tmp_path, monkeypatch, extra, inline_bytes):
    monkeypatch.setattr(paste_mod, "INLINE_BYTES", inline_bytes)
    cfg = load_paste_config(None, BASE + extra)
    run_paste(cfg, tmp_path / "one", workers=1)
    run_paste(cfg, tmp_path / "two", workers=2)
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len([f for f in one if f.startswith("images/")]) >= 7
    assert one == two
    assert not (tmp_path / "two" / ".work").exists()  # the array cache goes with the shards


def test_a_pool_run_stopped_midway_resumes_to_the_in_process_bytes(tmp_path):
    cfg = load_paste_config(None, [*BASE, "num_images=12", "chunk_size=2", "backgrounds.sources=[gradient,checkers]", "backgrounds.pool=2"])
    run_paste(cfg, tmp_path / "one", workers=1)
    out = tmp_path / "two"

    def stop(done, total):
        if done >= 2:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        run_paste(cfg, out, workers=2, progress=stop)
    written = sorted((out / "images").iterdir())
    assert 2 <= len(written) < 12 and (out / ".work" / paste_worker.CACHE_DIR).is_dir()
    summary = run_paste(cfg, out, workers=2, resume=True)
    assert 0 < summary.rendered <= 12 - 2
    assert files(out) == files(tmp_path / "one")


SCRIPT = """
import sys
import torch  # a caller's script that imports torch, as most do
from concurrent.futures import ProcessPoolExecutor
from synthloop.jobs import paste, paste_worker

if __name__ == "__main__":
    hide = sys.argv[1] == "hide"
    with ProcessPoolExecutor(1, mp_context=paste._mp_context()) as pool:
        if hide:
            with paste._main_module_hidden():
                first = pool.submit(paste_worker.torch_loaded)
        else:
            first = pool.submit(paste_worker.torch_loaded)
        print(first.result())
    assert sys.modules["__main__"].__file__ == __file__  # restored
"""


@pytest.mark.parametrize(("mode", "expected"), [("hide", "False"), ("plain", "True")])
def test_workers_do_not_rerun_a_callers_script_that_imports_torch(tmp_path, mode, expected):
    script = tmp_path / "caller.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == expected
