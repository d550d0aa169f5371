"""The Ray backend of ``synthloop paste``: byte-identical to the local backend, resumable per shard.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; tests that need Ray skip
when it is not installed (it is the optional extra ``synthloop[ray]``).
"""

import json
import sys

import pytest
from paste_helpers import output_files, tiny_config

from synthloop.errors import InputError
from synthloop.jobs import paste_ray
from synthloop.jobs.paste import WORK_DIR, run_paste


def cfg(*extra):
    return tiny_config(10, *extra)


files = output_files


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_paste(cfg("formats=[coco,yolo]"), out)
    return out


def test_ray_output_is_byte_identical_to_local(ray_session, local_run, tmp_path):
    seen = []
    summary = paste_ray.run_paste_ray(cfg("formats=[coco,yolo]"), tmp_path / "ray", progress=lambda d, t: seen.append((d, t)))
    assert summary.images == 10 and summary.rendered == 10
    want, got = files(local_run), files(tmp_path / "ray")
    assert sorted(got) == sorted(want) and len(want) > 12  # images, annotations, params, config, yolo
    assert [name for name in want if got[name] != want[name]] == []
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["backend"] == "ray" and run["workers"] == 2 and run["finished"]
    assert json.loads((local_run / "run.json").read_text())["backend"] == "local"
    # progress on the driver: from 0 up to every image, never backwards
    assert seen[0] == (0, 10) and seen[-1] == (10, 10) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_second_run_into_the_same_folder_reuses_no_stale_worker_state(ray_session, local_run, tmp_path):
    # Ray keeps its worker processes between runs: a worker must not append to the shard file of
    # a finished run (whose .work/ was removed) or render with the previous run's config
    out = tmp_path / "again"
    paste_ray.run_paste_ray(cfg("formats=[coco,yolo]", "seed=7"), out)
    paste_ray.run_paste_ray(cfg("formats=[coco,yolo]"), out, overwrite=True)
    assert files(out) == files(local_run)


class Abort(Exception):
    pass


def test_resume_after_an_aborted_run_equals_an_uninterrupted_one(ray_session, local_run, tmp_path):
    out = tmp_path / "resumed"

    def stop_midway(done, total):
        if done >= 4:
            raise Abort  # as Ctrl-C or a dead driver: the tasks in flight are cancelled

    with pytest.raises(Abort):
        paste_ray.run_paste_ray(cfg("formats=[coco,yolo]"), out, progress=stop_midway)
    work = out / WORK_DIR
    images = sorted((out / "images").iterdir())
    assert work.is_dir() and not (out / "annotations.json").exists()
    assert 4 <= len(images) < 10
    # a torn last line in a shard (a worker killed mid-write) and a lost image: both scenes are redone
    shard = max(work.glob("shard-*.jsonl"), key=lambda p: p.stat().st_size)
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    images[0].unlink()
    seen = []
    summary = paste_ray.run_paste_ray(cfg("formats=[coco,yolo]"), out, resume=True, progress=lambda d, t: seen.append(d))
    assert 0 < summary.rendered < 10 and seen[0] == 10 - summary.rendered
    assert files(out) == files(local_run)
    run = json.loads((out / "run.json").read_text())
    assert len(run["resumed"]) == 1 and run["backend"] == "ray"


def test_resume_runs_only_the_missing_shards(ray_session, local_run, tmp_path):
    # a "kill" after some shards: run a subset of the shards, then resume with the rest
    out = tmp_path / "subset"
    job = cfg("formats=[coco,yolo]")

    def first_two_shards(c, o, todo, count, total, progress):
        shards = paste_ray.shard_indices(todo, 2, c.chunk_size)[:2]
        paste_ray.run_shards(c, o, todo, count, total, progress, shards=shards)
        raise Abort

    with pytest.raises(Abort):
        run_paste(job, out, runner=first_two_shards, record={"backend": "ray"})
    done = sorted(p.name for p in (out / "images").iterdir())
    assert done == [f"{i:06d}.jpg" for i in range(len(done))] and 0 < len(done) < 10
    summary = paste_ray.run_paste_ray(job, out, resume=True)
    assert summary.rendered == 10 - len(done)
    assert files(out) == files(local_run)


def test_shards_cover_the_job_in_order():
    todo = [0, 1, 2, 5, 6, 7, 8, 9, 11]
    shards = paste_ray.shard_indices(todo, workers=2, chunk_size=16)
    assert [i for s in shards for i in s] == todo and max(len(s) for s in shards) == 1
    shards = paste_ray.shard_indices(list(range(1000)), workers=2, chunk_size=16)
    assert {len(s) for s in shards} == {16, 1000 % 16} and [i for s in shards for i in s] == list(range(1000))


def test_a_node_that_does_not_see_the_run_folder_fails_with_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="shares"):
        paste_ray.render_shard("run", {}, str(tmp_path / "elsewhere"), [0])


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match=r"synthloop\[ray\]"):
        paste_ray.run_paste_ray(cfg(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
