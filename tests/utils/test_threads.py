import os

import pytest
import torch
from typer.testing import CliRunner

from synthloop.utils import threads as th


def test_default_divides_the_usable_cpus_among_workers(monkeypatch):
    monkeypatch.setattr(th, "usable_cpus", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert th.default_threads(1)[0] == 8 and th.default_threads(2)[0] == 4 and th.default_threads(16)[0] == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a busy machine: never over-subscribe it
    n, why = th.default_threads(1)
    assert n == 1 and "busy" in why
    monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 3.2, 3.2))  # 3 of 8 CPUs busy: the 5 free ones, shared
    assert th.default_threads(1)[0] == 5 and th.default_threads(2)[0] == 2


def test_one_busy_cpu_of_two_means_one_thread(monkeypatch):
    # the measured case: a 2-core box where another job started (load 1.3) -> 2 threads ran 5x slower
    monkeypatch.setattr(th, "usable_cpus", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.3, 1.0, 0.8))
    n, why = th.default_threads(1)
    assert n == 1 and "busy" in why
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.3, 0.2))
    assert th.default_threads(1)[0] == 2


def test_use_threads_sets_torch_and_refuses_nonsense():
    before = torch.get_num_threads()
    try:
        assert th.use_threads(1) == (1, "--threads") and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            th.use_threads(0)
    finally:
        torch.set_num_threads(before)
    assert 1 <= th.usable_cpus() <= (os.cpu_count() or 1)


def test_commands_print_and_record_the_threads(tmp_path):
    import json

    from synthloop.cli import app

    before = torch.get_num_threads()
    try:
        r = CliRunner().invoke(app, ["paste-demo", "--out", str(tmp_path / "d"), "--num-images", "2", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    assert "torch threads: 1 (--threads)" in r.output
    run = json.loads((tmp_path / "d" / "run.json").read_text())
    assert run["cpus_usable"] >= 1 and "torch_threads" in run


def test_the_command_line_wins_over_the_config():
    before = torch.get_num_threads()
    try:
        assert th.use_threads(None, configured=1) == (1, "config threads") and torch.get_num_threads() == 1
        assert th.use_threads(2, configured=1) == (2, "--threads") and torch.get_num_threads() == 2
        assert th.use_threads(None, configured=None)[1] != "config threads"
        with pytest.raises(ValueError):
            th.use_threads(None, configured=0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("job", ["paste", "render", "refine", "terse", "terse-train"])
def test_every_job_config_takes_threads(job, tmp_path):
    from synthloop.config import build_config
    from synthloop.errors import ConfigError
    from synthloop.jobs.paste_config import PasteConfig
    from synthloop.jobs.refine import RefineConfig
    from synthloop.jobs.render import RenderJobConfig
    from synthloop.jobs.terse_detection_config import TerseDetectionJobConfig
    from synthloop.jobs.terse_mnist import TerseMnistConfig

    model, required = {
        "paste": (PasteConfig, {}),
        "render": (RenderJobConfig, {}),
        "refine": (RefineConfig, {"data": {"synthetic": "s", "real": "r"}}),
        "terse": (TerseDetectionJobConfig, {"real": {"builtin": "digit_scenes"}}),
        "terse-train": (TerseMnistConfig, {}),
    }[job]
    assert build_config(model, required).threads is None  # null: the automatic default
    cfg = build_config(model, {**required, "threads": 2})
    assert cfg.threads == 2
    # the stored config (what --resume compares) leaves it out: run.json records the threads used
    from synthloop.jobs import paste_config, terse_detection_config

    stored = {"paste": paste_config.resolved_dict, "terse": terse_detection_config.resolved_dict}.get(job, model.to_dict)(cfg)
    assert "threads" not in stored and "seed" in str(stored)
    with pytest.raises(ConfigError, match="job.yaml: field threads: Input should be greater than or equal to 1"):
        build_config(model, {**required, "threads": 0}, source="job.yaml")


def test_config_threads_are_used_printed_recorded_and_overridden(tmp_path):
    import json

    from synthloop.cli import app

    cfg = tmp_path / "job.yaml"
    cfg.write_text("threads: 1\nnum_images: 2\nscene: {canvas: [32, 32]}\ninstances: {limit: 50}\nbackgrounds: [gradient]\n")
    out = tmp_path / "o"
    before = torch.get_num_threads()
    try:
        r = CliRunner().invoke(app, ["paste", str(cfg), "--out", str(out), "-q"])
        assert r.exit_code == 0, r.output
        assert "torch threads: 1 (config threads)" in r.output
        assert json.loads((out / "run.json").read_text())["torch_threads"] == 1
        # --threads wins; threads is not part of the stored config, so a resumed run may change it
        cfg.write_text(cfg.read_text().replace("threads: 1", "threads: 2").replace("num_images: 2", "num_images: 3"))
        r = CliRunner().invoke(app, ["paste", str(cfg), "num_images=2", "--out", str(out), "-q", "--resume", "--threads", "2"])
        assert r.exit_code == 0 and "torch threads: 2 (--threads)" in r.output, r.output
        r = CliRunner().invoke(app, ["paste", str(cfg), "--out", str(out), "-q", "--overwrite"])
        assert r.exit_code == 0 and "torch threads: 2 (config threads)" in r.output, r.output
        assert json.loads((out / "run.json").read_text())["torch_threads"] == 2
        assert "threads" not in (out / "config.yaml").read_text()
    finally:
        torch.set_num_threads(before)
