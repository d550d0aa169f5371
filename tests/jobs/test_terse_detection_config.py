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


# -------------------------------------------------------------------------------------------- eval: a list of named sets


def _sets(tmp_path, sets, **extra):
    path = _job(tmp_path, "box", eval=sets, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the builtin photos vs 'box': not what is tested here
        return path


def test_eval_list_of_named_sets(tmp_path):
    path = _sets(tmp_path, [{"name": "val", "annotations": "data/annotations.json"}, {"name": "shifted", "builtin": "digit_scenes_shifted", "limit": 20}])
    cfg = load_job_config(path)
    assert [(n, f) for n, _, f in cfg.eval_sources()] == [("val", "eval[0]"), ("shifted", "eval[1]")]
    assert cfg.eval_sources()[0][1].annotations == (tmp_path / "data" / "annotations.json").resolve()  # paths resolve in every set
    assert cfg.eval_sources()[1][1].limit == 20 and cfg.eval_sources()[1][1].shift is None
    # the resolved config (as written into the run folder) loads again as the same config
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(resolved_dict(cfg)))
    assert load_job_config(tmp_path / "again.yaml") == cfg
    # a set is overridden by index or by name
    cfg = load_job_config(path, ["eval.1.limit=5", "eval.val.limit=3", "eval.shifted.shift=severe"])
    assert cfg.eval[0].limit == 3 and cfg.eval[1].limit == 5 and cfg.eval[1].shift == "severe"
    with pytest.raises(ConfigError, match="no eval set 'test'") as e:
        load_job_config(path, ["eval.test.limit=5"])
    assert e.value.field == "eval.test.limit"


def test_one_eval_source_is_the_set_named_eval(tmp_path):
    cfg = load_job_config(_sets(tmp_path, {"annotations": "data/annotations.json", "limit": 4}))
    assert [(n, s.limit, f) for n, s, f in cfg.eval_sources()] == [("eval", 4, "eval")]
    assert resolved_dict(cfg)["eval"]["limit"] == 4  # stored as before: a run of an older version resumes
    assert load_job_config(_sets(tmp_path, None)).eval_sources() == []
    with pytest.raises(ConfigError, match="one eval set has no name") as e:
        load_job_config(_sets(tmp_path, {"name": "val", "annotations": "data/annotations.json"}))
    assert e.value.field == "eval.name"
    with pytest.raises(ConfigError) as e:
        load_job_config(_sets(tmp_path, {"annotations": "data/annotations.json", "limit": 0}))
    assert e.value.field == "eval.limit" and str(tmp_path / "job.yaml") in str(e.value)


@pytest.mark.parametrize(
    ("second", "field", "message"),
    [
        ({"builtin": "digit_scenes"}, "eval[1].name", "missing"),
        ({"name": "", "builtin": "digit_scenes"}, "eval[1].name", "non-empty"),
        ({"name": "val", "builtin": "digit_scenes"}, "eval[1].name", "duplicate name 'val'"),
        ({"name": "x", "builtin": "digit_scenes", "limt": 3}, "eval[1].limt", "unknown key"),
        ({"name": "x", "builtin": "digit_scenes_shifted", "split": "val"}, "eval[1]", "one test set"),
        ({"name": "x", "builtin": "digit_scenes", "shift": "severe"}, "eval[1]", "shift is a setting of builtin: digit_scenes_shifted"),
        ("shifted", "eval[1]", "mapping"),
    ],
)
def test_bad_eval_list_names_the_file_and_field(tmp_path, second, field, message):
    path = _sets(tmp_path, [{"name": "val", "annotations": "data/annotations.json"}, second])
    with pytest.raises(ConfigError, match=message) as e:
        load_job_config(path)
    assert e.value.field == field and e.value.file == str(path)
    with pytest.raises(ConfigError, match="at least one"):
        load_job_config(_sets(tmp_path, []))


def test_plausibility_reference_default_and_checks(tmp_path):
    path = _sets(tmp_path, None)
    assert load_job_config(path).plausibility_reference() == "none"  # no teacher: nothing to measure with by default
    assert load_job_config(path, ["loop.objective=teacher"]).plausibility_reference() == "teacher"
    assert load_job_config(path, ["loop.objective=teacher", "plausibility.reference=none"]).plausibility_reference() == "none"
    assert load_job_config(path, ["plausibility.reference=baseline_random_paste"]).plausibility_reference() == "baseline_random_paste"
    with pytest.raises(ConfigError, match="needs loop.objective: teacher"):
        load_job_config(path, ["plausibility.reference=teacher"])
    with pytest.raises(ConfigError, match=r"plausibility\.reference"):
        load_job_config(path, ["plausibility.reference=teachr"])
