"""The imitation loop on tiny data: cycles run and record, the synthetic cap holds exactly in every
batch train_detector draws, a resumed run equals an uninterrupted one, bad config is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthloop.compose.sources import TensorInstances
from synthloop.config import build_config
from synthloop.data.backgrounds import BackgroundBank
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.errors import ConfigError, InputError
from synthloop.loops.detection_training import _batches
from synthloop.loops.imitation import ImitationConfig, ImitationLoop, ValSet, batch_plan, coco_scorer, synthetic_share
from synthloop.models.detection import DetectionTarget, LabelMap, SmallDetector

SIZE = 64
LABEL_MAP = LabelMap((3, 7), ("ring", "bar"))
TINY = {"max_cycles": 2, "patience": 5, "per_failure": 1, "scenes_per_cycle": 4, "t_batch_size": 4, "fg_size": 32, "blend_modes": ["alpha"], "crop_size": 16}


def _bank(n: int = 6) -> TensorInstances:
    rgbs, alphas, cats = [], [], []
    for i in range(n):
        a = torch.zeros(1, 20, 16)
        a[:, 2:18, 3:13] = 1.0
        rgbs.append(torch.full((3, 20, 16), 0.2 + 0.1 * i))
        alphas.append(a)
        cats.append((3, 7)[i % 2])
    return TensorInstances(rgbs, alphas, cats)


def _set(n: int, seed: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    targets = [{"boxes": torch.tensor([[5.0 + i, 6.0, 25.0 + i, 30.0]]), "labels": torch.tensor([1 + i % 2])} for i in range(n)]
    return images, targets


def _val(n: int = 4) -> ValSet:
    images, targets = _set(n, 9)
    entries = [
        ImageEntry(
            i + 1,
            f"{i}.png",
            SIZE,
            SIZE,
            [Annotation(LABEL_MAP.category_id(int(t["labels"][0])), tuple(t["boxes"][0, :2].tolist() + (t["boxes"][0, 2:] - t["boxes"][0, :2]).tolist()))],
        )
        for i, t in enumerate(targets)
    ]
    ds = Dataset(Path("."), [Category(3, "ring"), Category(7, "bar")], entries)
    return ValSet(images, targets, [e.id for e in entries], coco_scorer(ds, LABEL_MAP))


def _target(seed: int = 0) -> DetectionTarget:
    torch.manual_seed(seed)
    model = SmallDetector(3, SIZE, width=8, fpn_channels=32, head_convs=1)
    model.score_thresh = 0.0  # an untrained detector: keep low-score boxes so mining sees confident-enough ones
    return DetectionTarget(model, LABEL_MAP)


def _loop(**overrides) -> ImitationLoop:
    cfg = ImitationConfig(**{**TINY, "score_threshold": 0.05, **overrides})
    images, targets = _set(6, 3)
    return ImitationLoop(cfg, _target(), images, targets, _val(), _bank(), BackgroundBank(["noise", "gradient"]))


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s") and k != "seconds"} for h in history]


def test_cycles_run_and_record(tmp_path):
    loop = _loop()
    res = loop.run(tmp_path)
    assert [h["cycle"] for h in res.history] == [0, 1, 2] and res.selected_cycle in (1, 2)
    for h in res.history[1:]:
        assert sum(h["failures"].values()) > 0 and 0 < h["scenes_added"] <= 4
        assert h["synthetic_share"] == 0.5 and set(h["val"]) == {"ap50", "ap60", "ap70", "ap80", "ap"}
    assert res.history[2]["synthetic_images"] == res.history[1]["scenes_added"] + res.history[2]["scenes_added"]
    for c in (1, 2):
        assert (tmp_path / f"cycle_{c:03d}.pt").is_file()
        params = json.loads((tmp_path / f"scenes_{c:03d}.json").read_text())
        assert len(params) == res.history[c]["scenes_added"] and all(p["meta"]["cycle"] == c for p in params)
        for p, s in zip(params, res.scenes[c - 1]):  # every kept scene replays from its recorded params
            assert torch.equal(loop.replay(p).image, s.image)
    assert json.loads((tmp_path / "cycles.json").read_text()) == res.history


def test_stop_rule_min_gain():
    res = _loop(min_gain=10.0, patience=1, max_cycles=3).run()  # no cycle can gain 10 AP: stop after the first
    assert len(res.history) == 2 and "gained less" in res.stop_reason


@pytest.mark.parametrize("ratio, cap, batch, n_syn", [("1:1", 0.5, 8, 5), ("1:3", 0.5, 8, 40), ("1:3", 0.25, 8, 3), ("1:1", 0.3, 10, 7)])
def test_cap_is_exact_in_every_drawn_batch(ratio, cap, batch, n_syn):
    cfg = ImitationConfig(real_ratio=ratio, max_synthetic_share=cap, t_batch_size=batch, t_epochs=2)
    n_real = 13
    plan = batch_plan(n_real, n_syn, cfg, seed=5)
    assert plan == _batches(n_real, n_syn, batch, ratio, cap, 2, 5)  # exactly what train_detector draws
    r, s = (int(v) for v in ratio.split(":"))
    want = min(batch * s // (r + s), int(cap * batch + 1e-9))
    for epoch in plan:
        for b in epoch:
            assert len(b) == batch and sum(1 for i in b if i >= n_real) == want
    assert synthetic_share(plan, n_real) == pytest.approx(want / batch)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    full = _loop()
    res_full = full.run(tmp_path / "full")
    part = _loop()
    first = part.run(tmp_path / "part", stop_after=1)
    assert len(first.history) == 2
    resumed = _loop()  # a fresh process: new model, state from the folder
    res = resumed.run(tmp_path / "part", resume=True)
    assert _strip(res.history) == _strip(res_full.history)
    for a, b in zip(full.target.model.state_dict().values(), resumed.target.model.state_dict().values()):
        assert torch.equal(a, b)
    assert json.loads((tmp_path / "part" / "scenes_002.json").read_text()) == json.loads((tmp_path / "full" / "scenes_002.json").read_text())


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"select_metric": "ap90"}, "select_metric"),
        ({"max_synthetic_share": 0.1, "t_batch_size": 4}, "max_synthetic_share"),
        ({"scale": [1.2, 0.8]}, "scale"),
        ({"blend_modes": ["poisson"]}, "blend_modes"),
        ({"per_failure": 0}, "per_failure"),
        ({"typo_key": 1}, "typo_key"),
    ],
)
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ConfigError) as e:
        build_config(ImitationConfig, bad, source="imitate.yaml")
    assert isinstance(e.value, InputError) and "imitate.yaml" in str(e.value)
    if field in ("per_failure", "typo_key", "scale", "blend_modes"):
        assert field in str(e.value)


def test_val_of_another_size_is_refused():
    images, targets = _set(6, 3)
    val = _val()
    val.images = torch.rand(4, 3, 32, 32)
    with pytest.raises(InputError) as e:
        ImitationLoop(ImitationConfig(**TINY), _target(), images, targets, val, _bank(), BackgroundBank(["noise"]))
    assert e.value.field == "val.images"


def test_random_control_adds_as_many_scenes_anchored_on_no_failure(tmp_path):
    """``resimulate: random`` keeps mining, counts and the schedule, and draws the scenes from the
    random-paste ranges instead of around the failures (the benchmark's no-imitation control)."""
    paper = _loop(max_cycles=1).run(tmp_path / "f")
    control = _loop(max_cycles=1, resimulate="random").run(tmp_path / "r")
    assert [len(c) for c in control.scenes] == [len(c) for c in paper.scenes] and len(control.scenes[0]) > 0
    assert control.history[1]["failures"] == paper.history[1]["failures"]  # same starting model, same mining
    for s in control.scenes[0]:
        assert "failure" not in s.params.meta and s.params.meta["random"]["objects"] >= 1
        assert s.target["boxes"].shape[0] >= 0 and len(s.params.objects) == s.params.meta["random"]["objects"]
    assert control.history[1]["failures_used"] == 0
    again = _loop(max_cycles=1, resimulate="random").run(tmp_path / "r2")
    assert all(torch.equal(a.image, b.image) for a, b in zip(control.scenes[0], again.scenes[0]))
    loop = _loop()
    for s in control.scenes[0]:  # every scene replays from its recorded params
        assert torch.equal(loop.replay(s.params.to_dict()).image, s.image)
