"""The ``policy`` row of the detection benchmark (synthloop.experiments.detection_policy) end to end
on the quick budget: search, final fine-tune at random paste's schedule, AP on every test set, cache."""

from __future__ import annotations

import json

import pytest
import torch

from synthloop.experiments.detection import METHODS, Data, loop_config, train_baseline
from synthloop.experiments.detection_methods import Tests as BenchTests
from synthloop.experiments.detection_methods import methods_budget
from synthloop.experiments.detection_policy import BASE_ROW, QUICK_SEARCH, SEARCH, run_policy_row, search_sizes
from synthloop.loops.terse_detection import replay_scene

SIZES = {"iterations": 2, "population": 2, "elite": 1, "val_images": 6, "real_per_finetune": 4, "synthetic_per_finetune": 4}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("policy_row")
    budget = methods_budget(True)
    data = Data(budget, 0)
    tests = BenchTests(data, budget, None)
    baseline, _ = train_baseline(data, budget, 0, run_dir, lambda m: None)
    logs: list[str] = []
    row = run_policy_row(data, tests, baseline, budget, 0, run_dir, logs.append, sizes=SIZES)
    return {"run_dir": run_dir, "budget": budget, "data": data, "tests": tests, "baseline": baseline, "row": row, "logs": logs}


def test_the_row_runs_end_to_end(quick):
    row, budget, data = quick["row"], quick["budget"], quick["data"]
    assert {"ap", "synthetic_images", "policy_history", "final_policy", "timings"} <= set(row)
    assert set(row["ap"]) == set(quick["tests"].sets) and all(0.0 <= v["ap80"] <= 1.0 for v in row["ap"].values())
    t = row["timings"]
    assert t["short_finetunes"] == 4 and t["search_s"] > 0 and t["loop_s"] > 0 and t["eval_s"] > 0
    hist = row["policy_history"]
    assert [h["iteration"] for h in hist] == [1, 2] and all(len(h["candidates"]) == 2 and len(h["elite"]) == 1 for h in hist)
    assert hist[0]["policy"]["mean"]["rotation"] == pytest.approx(30.0)  # starts at the random sampler's defaults
    assert hist[1]["policy"]["mean_u"] == hist[0]["updated"]["mean_u"]
    # the final fine-tune: random paste's schedule (cycles x hard_per_cycle scenes at 1:1) with the final mean setting
    rp = loop_config(budget, METHODS[BASE_ROW], 0)
    cfg = row["config"]
    assert row["synthetic_images"] == rp.cycles * rp.hard_per_cycle
    assert (cfg["cycles"], cfg["hard_per_cycle"], cfg["t_epochs"], cfg["real_ratio"], cfg["synthesizer"], cfg["keep"]) == (
        rp.cycles, rp.hard_per_cycle, rp.t_epochs, rp.real_ratio, "random", "all",
    )  # fmt: skip
    final = row["final_policy"]["setting"]
    assert cfg["num_objects"] == final["objects"] and cfg["ranges"]["angle"] == pytest.approx([-final["rotation"], final["rotation"]])
    run_dir = quick["run_dir"]
    assert (run_dir / "policy_model.pt").is_file() and (run_dir / "policy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every scene keeps its params: the final scenes and the search's replay exactly
    key = json.loads((run_dir / "policy.json").read_text())["key"]
    folder = run_dir / f"policy-{key}"
    final_scenes = json.loads((folder / "scenes.json").read_text())
    assert len(final_scenes) == row["synthetic_images"]
    search_scenes = json.loads((folder / "search" / "search_scenes" / "iter_1.json").read_text())
    assert len(search_scenes) == 2 and all(len(c) == 4 for c in search_scenes)
    samples = torch.load(run_dir / "policy_samples.pt", weights_only=True)
    again = replay_scene(final_scenes[0], data.foregrounds, data.backgrounds, data.label_map)
    assert torch.equal(again.image.clamp(0, 1).mul(255).round().to(torch.uint8), samples["images"][0])
    for p in search_scenes[1]:
        assert len(p["objects"]) == hist[0]["candidates"][1]["setting"]["objects"]


def test_the_row_is_cached_by_its_config(quick):
    logs: list[str] = []
    args = (quick["data"], quick["tests"], quick["baseline"], quick["budget"], 0, quick["run_dir"], logs.append)
    again = run_policy_row(*args, sizes=SIZES)
    assert again == json.loads(json.dumps(quick["row"])) and logs == ["seed 0 policy: cached"]
    assert run_policy_row(*args, sizes={**SIZES, "val_images": 5}, cached_only=True) is None  # another config: not in the cache


def test_search_sizes():
    assert search_sizes(methods_budget(True)) == QUICK_SEARCH and search_sizes(methods_budget(False)) == SEARCH
    assert SEARCH["iterations"] * SEARCH["population"] == 8 and SEARCH["elite"] < SEARCH["population"]


def test_reward_uses_common_random_numbers_and_leaves_the_start_point_alone(quick):
    from synthloop.experiments.detection import copy_target
    from synthloop.loops.policy import FinetuneReward
    from synthloop.loops.policy_space import default_space

    data, budget = quick["data"], quick["budget"]
    base = loop_config(budget, METHODS[BASE_ROW], 0)
    space = default_space(base.blend_modes, data.backgrounds.sources)
    start = copy_target(quick["baseline"])
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    reward = FinetuneReward(
        base,
        space,
        start,
        data.loop_images,
        data.loop_targets,
        data.foregrounds,
        data.backgrounds,
        data.val,
        val_images=6,
        real_per_finetune=4,
        synthetic_per_finetune=4,
    )
    setting = space.decode(space.default_vector())
    r0, info0 = reward(setting, 0, 0)
    r1, info1 = reward(setting, 0, 1)  # another candidate slot of the same iteration: the same random numbers
    assert r0 == r1 and info0["scenes"] == info1["scenes"] and len(info0["scenes"]) == 4
    _, info2 = reward(setting, 1, 0)  # the next iteration draws new scenes
    assert info2["scenes"] != info0["scenes"]
    assert reward.finetunes == 3 and all(torch.equal(v, start.model.state_dict()[k]) for k, v in before.items())
    assert len(reward.val.images) == 6 and reward.start == pytest.approx(0.5 * (reward.start_ap["ap50"] + reward.start_ap["ap80"]))
