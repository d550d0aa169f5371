"""Table 1 rows of ``benchmarks/affnist_error.py`` (issue 10): ``--method`` sets the loop options of
one row, ``--summarise`` collects rows run under one protocol and picks the best learned row."""

from __future__ import annotations

import json

import pytest

from synthloop.experiments.affnist import ErrorConfig
from synthloop.experiments.affnist_methods import METHODS


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("affnist_error")


def _row(bench, method: str, *, val: float, test: float, cycles: int = 20, seed: int = 0, schedule: str = "long") -> dict:
    args = ["--method", method, "--cycles", str(cycles), "--seed", str(seed), "--schedule", schedule]
    cfg = bench.build_config(bench.parse_args(args))
    return {
        "config": cfg.to_dict(), "test_error_pct": test, "val_error_pct": val, "mnist_test_error_pct": 0.5,
        "best_cycle": 3, "wall_s": 10.0, "device": "cpu", "method": method, "commit": "abc", "machine": {"cpu": "x"},
    }  # fmt: skip


def test_method_sets_the_loop_options_of_its_row(bench):
    for method in ("random", "worst_of_k", "terse_teacher"):
        cfg = bench.build_config(bench.parse_args(["--method", method, "--cycles", "7"]))
        assert isinstance(cfg, ErrorConfig) and cfg.loop.cycles == 7
        for key, value in METHODS[method].items():
            assert getattr(cfg.loop, key) == value, (method, key)
    assert bench.build_config(bench.parse_args([])).loop.source == "terse"


def test_summarise_picks_the_best_learned_row_by_validation_error(bench, tmp_path):
    rows = {"random": _row(bench, "random", val=1.0, test=1.1), "terse_paper": _row(bench, "terse_paper", val=2.0, test=1.9),
            "worst_of_k": _row(bench, "worst_of_k", val=1.5, test=1.7)}  # fmt: skip
    for method, row in rows.items():
        (tmp_path / f"affnist_error_{method}_seed0.json").write_text(json.dumps(row))
    out = bench.summarise(tmp_path)
    # random is a row, never the best *learned* method; among learned rows validation decides, not test
    assert out["method"] == "worst_of_k" and out["test_error_pct"] == 1.7
    assert out["rows"] == {"random": 1.1, "worst_of_k": 1.7, "terse_paper": 1.9}
    written = json.loads((tmp_path / "affnist_error.json").read_text())
    assert written["rows"] == out["rows"] and written["rows_commit"]["random"] == ["abc"]


def test_summarise_refuses_rows_of_different_protocols(bench, tmp_path):
    (tmp_path / "affnist_error_random_seed0.json").write_text(json.dumps(_row(bench, "random", val=1.0, test=1.0, cycles=20)))
    (tmp_path / "affnist_error_terse_paper_seed0.json").write_text(json.dumps(_row(bench, "terse_paper", val=1.0, test=1.0, cycles=15)))
    with pytest.raises(SystemExit, match="another protocol"):
        bench.summarise(tmp_path)
    assert not (tmp_path / "affnist_error.json").exists()


def test_summarise_needs_a_learned_row(bench, tmp_path):
    (tmp_path / "affnist_error_random_seed0.json").write_text(json.dumps(_row(bench, "random", val=1.0, test=1.0)))
    with pytest.raises(SystemExit, match="no learned row"):
        bench.summarise(tmp_path)


def test_schedules_are_presets_that_explicit_flags_override(bench):
    short = bench.build_config(bench.parse_args(["--schedule", "short", "--method", "random"]))
    assert short.loop.cycles == 10 and short.loop.t_synthetic_per_epoch == 5_000 and short.base_epochs == 1
    assert bench.build_config(bench.parse_args(["--schedule", "short", "--cycles", "4"])).loop.cycles == 4
    long = bench.parse_args([])
    assert long.schedule == "long" and long.method == "terse_paper"  # the paper's loop is the default row
    assert bench.build_config(long).loop.t_synthetic_per_epoch == 10_000
    assert bench.parse_args(["--quick"]).schedule == "quick"
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--schedule", "short"])


def test_summarise_pools_seeds_into_mean_and_std(bench, tmp_path):
    for seed, (r, t) in enumerate([(2.0, 1.5), (2.2, 1.7), (2.4, 1.6)]):
        for method, test, val in (("random", r, r), ("terse_paper", t, t)):
            row = _row(bench, method, val=val, test=test, seed=seed, schedule="short")
            (tmp_path / f"affnist_error_short_{method}_seed{seed}.json").write_text(json.dumps(row))
    # a row of the long schedule lies beside them: another schedule, not pooled
    (tmp_path / "affnist_error_random_seed0.json").write_text(json.dumps(_row(bench, "random", val=9.0, test=9.0)))
    out = bench.summarise(tmp_path, schedule="short")
    assert out["seeds"] == {"random": [0, 1, 2], "terse_paper": [0, 1, 2]}
    assert out["rows"]["random"] == pytest.approx(2.2) and out["rows_std"]["random"] == pytest.approx(0.2)
    assert out["method"] == "terse_paper" and out["test_error_pct"] == pytest.approx(1.6)
    assert out["rows_per_seed"]["terse_paper"] == {"0": 1.5, "1": 1.7, "2": 1.6}
    assert out["vs_random"]["difference_pct"] == pytest.approx(-0.6) and out["vs_random"]["beyond_pooled_std"] is True
    assert out["config"]["seed"] is None and out["config"]["loop"]["cycles"] == 20
    assert (tmp_path / "affnist_error_short.json").exists() and not (tmp_path / "affnist_error.json").exists()


def test_summarise_refuses_a_seed_of_another_protocol(bench, tmp_path):
    (tmp_path / "affnist_error_random_seed0.json").write_text(json.dumps(_row(bench, "random", val=1.0, test=1.0)))
    (tmp_path / "affnist_error_terse_paper_seed0.json").write_text(json.dumps(_row(bench, "terse_paper", val=1.0, test=1.0)))
    (tmp_path / "affnist_error_terse_paper_seed1.json").write_text(json.dumps(_row(bench, "terse_paper", val=1.0, test=1.0, seed=1, cycles=7)))
    with pytest.raises(SystemExit, match="terse_paper seed 1"):
        bench.summarise(tmp_path)


@pytest.mark.parametrize("text, message", [("{not json", "not a readable row file"), ('{"config": {}}', "lacks field 'test_error_pct'")])
def test_summarise_names_a_broken_row_file_and_writes_nothing(bench, tmp_path, text, message):
    (tmp_path / "affnist_error_random_seed0.json").write_text(json.dumps(_row(bench, "random", val=1.0, test=1.0)))
    (tmp_path / "affnist_error_terse_paper_seed1.json").write_text(text)
    with pytest.raises(SystemExit, match=f"affnist_error_terse_paper_seed1.json: .*{message}"):
        bench.summarise(tmp_path)
    assert not (tmp_path / "affnist_error.json").exists()
