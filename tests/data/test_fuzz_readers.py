"""Property-based fuzzing (hypothesis) of every reader of untrusted files: COCO, YOLO, VOC, YAML
configs, ``params.jsonl`` replay records and checkpoints. Whatever the input, the reader either
reads it or raises an :class:`~synthloop.errors.InputError` that names the file; never another
exception. The cases are in ``fuzz_cases.py``; ``benchmarks/reliability_fuzz.py`` runs >= 10,000."""

import warnings

import pytest
from fuzz_cases import TARGETS, run_case
from hypothesis import HealthCheck, given, settings

from synthloop.errors import InputError


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_reader_fails_only_with_a_clear_input_error(name):
    target = TARGETS[name]

    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=target.cases)
    def check(case):
        outcome, exc = run_case(target, case)
        if outcome == "crash":
            raise AssertionError(f"{name}: {type(exc).__name__} instead of an InputError") from exc
        assert outcome != "unclear", f"{name}: the error names no file of the case: {exc}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check()


def test_replay_record_errors_name_the_file_and_line(tmp_path):
    import json

    from fuzz_cases import PARAMS_BASE

    from synthloop.jobs.replay import read_scene_params

    good = json.dumps(PARAMS_BASE)
    bad = json.loads(good)
    bad["id"] = 1
    bad["params"]["canvas"] = "wide"
    (tmp_path / "params.jsonl").write_text(good + "\n" + json.dumps(bad) + "\n[1]\n")
    assert read_scene_params(tmp_path, 0)[1].canvas == (32, 48)
    with pytest.raises(InputError, match=r"params.jsonl: field line 2.params: malformed"):
        read_scene_params(tmp_path, 1)
    with pytest.raises(InputError, match=r"params.jsonl: field line 3: a record must be a JSON object"):
        read_scene_params(tmp_path, 2)
