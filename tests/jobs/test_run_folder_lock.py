"""The run-folder lock (:func:`synthloop.jobs.run_folder.lock`): a live holder is refused with its
PID, a stale lock (dead PID, or a reused PID with another start time) is taken over, the lock goes
away after a normal run and after an exception, and every job that writes a run folder takes it."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from synthloop.errors import InputError
from synthloop.jobs import run_folder
from synthloop.jobs.run_folder import LOCK_FILE


def _write_lock(out, **fields):
    out.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": run_folder.process_start_time(os.getpid()), "acquired": "then", "token": "x"}
    (out / LOCK_FILE).write_text(json.dumps({**me, **fields}))
    return out / LOCK_FILE


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_written_and_removed_with_the_folder_it_created(tmp_path):
    out = tmp_path / "run"
    with run_folder.lock(out) as me:
        doc = json.loads((out / LOCK_FILE).read_text())
        assert doc == me and doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
        assert doc["process_start"] == run_folder.process_start_time(os.getpid()) is not None
        assert run_folder.lock_holder(out)["pid"] == os.getpid()
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # no temp files left
    assert not out.exists()
    out.mkdir()
    (out / "keep").write_text("x")
    with run_folder.lock(out):
        pass
    assert [p.name for p in out.iterdir()] == ["keep"] and run_folder.lock_holder(out) is None


def test_lock_is_released_after_an_exception(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"), run_folder.lock(out):
        raise RuntimeError("boom")
    assert not (out / LOCK_FILE).exists()


def test_live_holder_is_refused_with_its_pid(tmp_path):
    out = tmp_path / "run"
    lock_file = _write_lock(out)
    before = lock_file.read_bytes()
    with pytest.raises(InputError, match=rf"{out}.*PID {os.getpid()}"), run_folder.lock(out):
        pass
    assert lock_file.read_bytes() == before  # a refused run leaves the holder's lock alone
    with run_folder.lock(tmp_path / "other"), pytest.raises(InputError, match="another run"), run_folder.lock(tmp_path / "other"):  # not re-entrant
        pass


def test_another_hosts_lock_counts_as_live(tmp_path):
    _write_lock(tmp_path / "run", host="elsewhere", pid=_dead_pid())
    with pytest.raises(InputError, match="on elsewhere"), run_folder.lock(tmp_path / "run"):
        pass


@pytest.mark.parametrize(
    "fields",
    [{"pid": "dead"}, {"process_start": -1}, {"pid": None}, {"pid": -5}],
    ids=["dead-pid", "reused-pid", "no-pid", "negative-pid"],
)
def test_stale_lock_is_taken_over(tmp_path, fields):
    fields = {**fields, "pid": _dead_pid()} if fields.get("pid") == "dead" else fields
    out = tmp_path / "run"
    _write_lock(out, **fields)
    assert run_folder.lock_holder(out) is None
    with run_folder.lock(out) as me:
        assert json.loads((out / LOCK_FILE).read_text())["token"] == me["token"]
    assert not out.exists() or not (out / LOCK_FILE).exists()


def test_garbage_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_bytes(b"\x00not json")
    with run_folder.lock(out):
        pass
    assert list(out.iterdir()) == []


def test_two_processes(tmp_path):
    out = tmp_path / "run"
    holder = textwrap.dedent(f"""
        import sys
        from synthloop.jobs import run_folder
        with run_folder.lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    p = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=rf"PID {p.pid}\b"), run_folder.lock(out):
            pass
        p.kill()  # SIGKILL: the lock file stays behind
        p.wait()
        assert (out / LOCK_FILE).is_file() and run_folder.lock_holder(out) is None
        with run_folder.lock(out) as me:
            assert run_folder.lock_holder(out)["token"] == me["token"]
    finally:
        p.kill()
        p.wait()


def test_prepare_ignores_the_lock_and_overwrite_keeps_it(tmp_path):
    out = tmp_path / "run"
    with run_folder.lock(out):
        assert run_folder.prepare(out, resume=False, config_file="config.yaml", config={}) is None
        assert run_folder.prepare(out, resume=True, config_file="config.yaml", config={}, resume_empty=True) is None
        (out / "config.yaml").write_text(yaml.safe_dump({"a": 1}))
        run_folder.prepare(out, resume=False, config_file="config.yaml", config={}, overwrite=True, outputs=("config.yaml", LOCK_FILE))
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    _write_lock(out, pid=_dead_pid())  # a stale lock alone: still an empty folder
    assert run_folder.prepare(out, resume=False, config_file="config.yaml", config={}) is None


def _jobs(tmp_path):
    """Each job that writes a run folder, called on ``out`` with a config it never gets to use."""
    from synthloop.jobs.demo import run_terse_demo
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config
    from synthloop.jobs.refine import RefineConfig, run_refine
    from synthloop.jobs.render import RenderJobConfig, write_dataset
    from synthloop.jobs.terse_detection import run_terse_detection_job
    from synthloop.jobs.terse_detection_config import TerseDetectionJobConfig
    from synthloop.jobs.terse_mnist import TerseMnistConfig, run_terse_mnist

    return {
        "paste": lambda out: run_paste(load_paste_config(None, ["num_images=2"]), out, resume=True),
        "render": lambda out: write_dataset(RenderJobConfig.model_construct(), out, overwrite=True),
        "refine": lambda out: run_refine(RefineConfig.model_construct(), out, resume=True),
        "terse": lambda out: run_terse_detection_job(TerseDetectionJobConfig.model_construct(), out, resume=True),
        "terse-train": lambda out: run_terse_mnist(TerseMnistConfig(), out, resume=True),
        "terse-demo": lambda out: run_terse_demo(out),
    }


@pytest.mark.parametrize("job", ["paste", "render", "refine", "terse", "terse-train", "terse-demo"])
def test_every_job_takes_the_lock(tmp_path, job):
    out = tmp_path / "run"
    lock_file = _write_lock(out)
    before = lock_file.read_bytes()
    with pytest.raises(InputError, match=f"PID {os.getpid()}"):
        _jobs(tmp_path)[job](out)
    assert lock_file.read_bytes() == before and [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_paste_leaves_no_lock_after_a_run_or_a_crash(tmp_path, monkeypatch):
    from synthloop.jobs import paste as paste_mod
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config

    cfg = load_paste_config(None, ["num_images=2", "scene.canvas=[32,32]", "scene.objects=[1,1]", "instances.limit=50", "backgrounds.sources=[gradient]"])
    run_paste(cfg, tmp_path / "ok")
    assert (tmp_path / "ok" / "run.json").is_file() and not (tmp_path / "ok" / LOCK_FILE).exists()

    def fail(*args, **kwargs):
        raise RuntimeError("crash")

    monkeypatch.setattr(paste_mod, "finalize", fail)
    with pytest.raises(RuntimeError, match="crash"):
        run_paste(cfg, tmp_path / "crash")
    assert not (tmp_path / "crash" / LOCK_FILE).exists()
    monkeypatch.undo()
    run_paste(cfg, tmp_path / "crash", resume=True)  # resumes in the folder the crash left
    assert not (tmp_path / "crash" / LOCK_FILE).exists()
