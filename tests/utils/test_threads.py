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
