"""``synthloop improve``: ``method`` picks the job (file or command line), the rest validates as
that job's config (errors name file and key), and the command runs the chosen job end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_imitate_job import TINY_LOOP, job_dict
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.errors import ConfigError
from synthloop.jobs import improve
from synthloop.jobs.imitate_config import ImitateJobConfig
from synthloop.jobs.terse_detection_config import TerseDetectionJobConfig

TERSE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "terse_detection" / "tiny_coco.yaml"


def test_method_from_default_file_and_command_line():
    assert improve.DEFAULT_METHOD in improve.METHODS
    assert improve.split_method({"seed": 1}, [], "f.yaml") == (improve.DEFAULT_METHOD, {"seed": 1}, [])
    assert improve.split_method({"method": "imitate", "seed": 1}, ["seed=2"], "f.yaml") == ("imitate", {"seed": 1}, ["seed=2"])
    assert improve.split_method({"method": "imitate"}, ["method=terse", "seed=2"], "f.yaml")[::2] == ("terse", ["seed=2"])


def test_unknown_method_names_the_file_or_the_command_line():
    with pytest.raises(ConfigError, match=r"f\.yaml: method: 'policy' is not one of terse, imitate"):
        improve.split_method({"method": "policy"}, [], "f.yaml")
    with pytest.raises(ConfigError, match=r"the command line: method: 'ters'"):
        improve.split_method({}, ["method=ters"], "f.yaml")


def test_the_rest_validates_as_the_methods_job_config(tmp_path):
    data = yaml.safe_load(TERSE_EXAMPLE.read_text())
    path = TERSE_EXAMPLE.parent / "_improve_test.yaml"  # beside the example: its relative paths resolve the same
    try:
        path.write_text(yaml.safe_dump({**data, "method": "terse"}))
        cfg = improve.load_improve_config(path, ["loop.cycles=3"])
        assert cfg.method == "terse" and isinstance(cfg.job, TerseDetectionJobConfig) and cfg.job.loop.cycles == 3
        assert cfg.job.real.annotations.is_file()  # relative to the config file, as `synthloop terse` resolves it
        with pytest.raises(ConfigError) as e:  # a terse config read as an imitate one: imitate needs `val`
            improve.load_improve_config(path, ["method=imitate"])
        assert "_improve_test.yaml" in str(e.value) and "val" in str(e.value)
    finally:
        path.unlink(missing_ok=True)


def test_improve_runs_imitation_end_to_end(tmp_path):
    data = dict(job_dict(tmp_path), loop={**TINY_LOOP, "max_cycles": 1}, method="imitate")
    data.pop("test")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = improve.load_improve_config(path)
    assert cfg.method == "imitate" and isinstance(cfg.job, ImitateJobConfig)
    res = CliRunner().invoke(app, ["improve", str(path), "--out", str(tmp_path / "run"), "--threads", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "method: imitate" in res.output and "val: baseline" in res.output and (tmp_path / "run" / "report.html").is_file()
    bad = CliRunner().invoke(app, ["improve", str(path), "method=nope", "--out", str(tmp_path / "run2")])
    assert bad.exit_code == 2 and "method" in bad.output and "Traceback" not in bad.output and not (tmp_path / "run2").exists()
