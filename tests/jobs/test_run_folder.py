import json

import pytest
import yaml

from synthloop.errors import InputError
from synthloop.jobs import run_folder


def _started(out, config):
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return run_folder.start_record(out, seed=3, previous=None, argv=["synthloop", "x"], workers=2)


def test_fresh_run_records_and_finishes(tmp_path):
    out = tmp_path / "run"
    assert run_folder.prepare(out, resume=False, config_file="config.yaml", config={}) is None
    rec = _started(out, {"a": 1})
    doc = json.loads((out / "run.json").read_text())
    assert doc == rec and doc["seed"] == 3 and doc["workers"] == 2 and doc["finished"] is None and doc["resumed"] == []
    assert doc["command"] == ["synthloop", "x"] and "synthloop_version" in doc and "torch_version" in doc
    run_folder.finish_record(out, rec, images=5)
    doc = json.loads((out / "run.json").read_text())
    assert doc["finished"] is not None and doc["images"] == 5


def test_busy_folder_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    _started(out, {"a": 1})
    with pytest.raises(InputError, match="not empty.*--resume.*choose another folder"):
        run_folder.prepare(out, resume=False, config_file="config.yaml", config={"a": 1})
    with pytest.raises(InputError, match="--overwrite"):
        run_folder.prepare(out, resume=False, config_file="config.yaml", config={"a": 1}, outputs=("config.yaml",))
    assert run_folder.prepare(out, resume=False, config_file="config.yaml", config={"a": 1}, overwrite=True, outputs=("config.yaml", "run.json")) is None
    assert not any(out.iterdir())


def test_resume_checks_the_config_and_keeps_the_history(tmp_path):
    out = tmp_path / "run"
    _started(out, {"a": 1, "cycles": 2})
    previous = run_folder.prepare(out, resume=True, config_file="config.yaml", config={"a": 1, "cycles": 3}, ignore=("cycles",))
    assert previous["seed"] == 3
    again = run_folder.start_record(out, seed=3, previous=previous)
    assert again["started"] == previous["started"] and len(again["resumed"]) == 1
    with pytest.raises(InputError, match="changed: a: 1 -> 2"):
        run_folder.prepare(out, resume=True, config_file="config.yaml", config={"a": 2, "cycles": 2})
    with pytest.raises(InputError, match="nothing to resume"):
        run_folder.prepare(tmp_path / "empty", resume=True, config_file="config.yaml", config={})
    assert run_folder.prepare(tmp_path / "empty", resume=True, config_file="config.yaml", config={}, resume_empty=True) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        run_folder.prepare(tmp_path / "file", resume=False, config_file="config.yaml", config={})
