"""The Ray backend of ``synthloop render``: byte-identical to the local backend, atomic, clear errors.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; tests that need Ray skip
when it is not installed (it is the optional extra ``synthloop[ray]``).
"""

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.errors import InputError
from synthloop.jobs import render_ray
from synthloop.jobs.render import RenderJobConfig, write_dataset
from synthloop.render import bundled_font_dir

SETTINGS = {
    "count": 7,
    "batch_size": 2,
    "seed": 3,
    "size": [16, 16],
    "fonts": [str(bundled_font_dir() / "DejaVuSans.ttf")],
    "background": {"enabled": False},  # no photos to decode
    "occlusion": {"enabled": False},
    "output": {"masks": True},
}


def cfg(**kw) -> RenderJobConfig:
    return RenderJobConfig.model_validate(SETTINGS | kw)


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "run.json"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    write_dataset(cfg(), out)
    return out


def test_ray_output_is_byte_identical_to_local(ray_session, local_run, tmp_path):
    seen = []
    # 4 batches, at most 2 in flight (finished ones waiting for their turn count): taken in batch order
    run = render_ray.write_dataset_ray(cfg(), tmp_path / "ray", progress=lambda d, t: seen.append((d, t)), max_in_flight=2)
    want, got = files(local_run), files(tmp_path / "ray")
    assert sorted(got) == sorted(want) and len(want) == 7 * 2 + 3  # images, masks, annotations, params, config
    assert [name for name in want if got[name] != want[name]] == []
    assert seen == [(2, 7), (4, 7), (6, 7), (7, 7)]  # as the local backend reports it
    assert run == json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["backend"] == "ray" and run["ray_address"] == "local" and run["ray_nodes"] == 1 and run["workers"] == 2
    assert json.loads((local_run / "run.json").read_text())["backend"] == "local"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ray"]  # the staging folder was renamed


def test_the_cli_renders_on_ray(ray_session, local_run, tmp_path):
    config = tmp_path / "render.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["render", str(config), "seed=5", "--out", str(out), "--backend", "ray"])
    assert res.exit_code == 0, res.output
    assert "wrote 7 images of 10 classes" in res.output
    assert json.loads((out / "run.json").read_text())["backend"] == "ray"
    # Ray keeps its worker processes: this run (another seed) and the next must not reuse a stale renderer
    again = render_ray.write_dataset_ray(cfg(), out, overwrite=True)
    assert again["seed"] == 3 and files(out) == files(local_run)


class Abort(Exception):
    pass


def test_a_stopped_run_leaves_nothing_behind(ray_session, tmp_path):
    def stop(done, total):
        raise Abort  # as Ctrl-C: the tasks in flight are cancelled, the staging folder removed

    with pytest.raises(Abort):
        render_ray.write_dataset_ray(cfg(), tmp_path / "out", progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_a_node_that_does_not_see_the_staging_folder_fails_with_a_clear_error(ray_session, tmp_path):
    missing = tmp_path / ".out.0badc0de.render"
    with pytest.raises(InputError, match=f"{missing}.*every Ray node shares"):  # raised in the task, re-raised as itself
        list(render_ray.ray_runner()(cfg(), missing, [(0, 0, 2)]))


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match=r"synthloop\[ray\]"):
        render_ray.write_dataset_ray(cfg(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
