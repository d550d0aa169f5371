"""The ``synthloop terse`` config: threads, excluded background photos, and the warning when a
background source is also a foreground source."""

import json
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

from synthloop.errors import ConfigError
from synthloop.jobs.terse_detection_config import foreground_sources, load_job_config, resolved_dict


def _job(tmp_path, category, **extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(data / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 0}],
        "categories": [{"id": 1, "name": category}],
    }
    (data / "annotations.json").write_text(json.dumps(ann))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"real": {"annotations": "data/annotations.json"}, **extra}))
    return path


def test_real_coins_against_the_builtin_coins_photo_warn(tmp_path):
    path = _job(tmp_path, "coin")
    with pytest.warns(UserWarning, match=r"photo 'coins' shows objects like the foreground category 'coin' \(real\).*backgrounds.exclude: \[coins\]"):
        cfg = load_job_config(path)
    assert [f.field for f in foreground_sources(cfg)] == ["real"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_job_config(_job(tmp_path, "coin", backgrounds={"sources": ["photos"], "exclude": ["coins"]}))
        assert cfg.backgrounds.exclude == ["coins"]
        load_job_config(_job(tmp_path, "coin", foregrounds={"source": "digits"}))  # the cut-outs are digits, not the coins
    with pytest.warns(UserWarning, match="is also a foreground source"):
        load_job_config(_job(tmp_path, "box", backgrounds="data"))


def test_threads_is_a_key_but_not_part_of_the_stored_config(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_job_config(_job(tmp_path, "box", threads=2))
        assert cfg.threads == 2 and "threads" not in resolved_dict(cfg)
        assert load_job_config(_job(tmp_path, "box")).threads is None
    with pytest.raises(ConfigError, match="field threads"):
        load_job_config(_job(tmp_path, "box", threads=0))
