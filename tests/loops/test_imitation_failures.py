"""Failure mining finds exactly the planted failures; re-simulated scenes keep the failure's class,
stay inside the perturbation bounds, replay exactly and never use val pixels."""

from __future__ import annotations

import math

import pytest
import torch

from synthloop.compose.sources import TensorInstances
from synthloop.data.backgrounds import BackgroundBank
from synthloop.errors import InputError
from synthloop.loops.imitation_failures import Failure, InstanceIndex, Jitter, SceneStyle, mine_failures, random_scene, resimulate
from synthloop.loops.terse_detection_scenes import replay_scene
from synthloop.models.detection import LabelMap

SIZE = 64
CATS = (3, 7)
LABEL_MAP = LabelMap(CATS, ("ring", "bar"))


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _gt() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[5.0, 5.0, 25.0, 29.0], [35.0, 30.0, 55.0, 58.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 34.0]]), "labels": torch.tensor([2])},
    ]


def _perfect(gt):
    return [{"boxes": t["boxes"].clone(), "labels": t["labels"].clone(), "scores": torch.full((len(t["labels"]),), 0.9)} for t in gt]


def _mine(preds, **kw):
    return mine_failures(_images(), _gt(), preds, category_ids=CATS, image_ids=[11, 12], **kw)


def test_a_perfect_detector_has_no_failures():
    assert _mine(_perfect(_gt())) == []


def test_planted_miss_is_exactly_one_false_negative():
    preds = _perfect(_gt())
    preds[0] = {k: v[:1] for k, v in preds[0].items()}  # the bar of image 0 is missed
    (f,) = _mine(preds)
    assert (f.kind, f.image_id, f.image_index, f.category_id) == ("false_negative", 11, 0, 7)
    assert f.box == [35.0, 30.0, 55.0, 58.0]
    assert f.size == [20.0, 28.0] and f.aspect == pytest.approx(20 / 28, abs=1e-4)
    assert f.center == pytest.approx([45 / SIZE, 44 / SIZE], abs=1e-4)
    assert f.crop is not None and f.crop.dtype == torch.uint8 and f.crop.shape == (3, 48, 48)


def test_low_score_detection_counts_as_a_miss():
    preds = _perfect(_gt())
    preds[1]["scores"] = torch.tensor([0.3])
    (f,) = _mine(preds)
    assert f.kind == "false_negative" and f.image_id == 12


def test_planted_hallucination_is_exactly_one_false_positive():
    preds = _perfect(_gt())
    preds[1] = {
        "boxes": torch.cat([preds[1]["boxes"], torch.tensor([[40.0, 40.0, 60.0, 60.0]])]),
        "labels": torch.tensor([2, 1]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    (f,) = _mine(preds)
    assert (f.kind, f.category_id, f.image_id, f.true_category_id) == ("false_positive", 3, 12, None)
    assert f.box == [40.0, 40.0, 60.0, 60.0] and f.score == pytest.approx(0.8)


def test_wrong_class_on_an_object_is_a_miss_and_a_confusion():
    preds = _perfect(_gt())
    preds[1]["labels"] = torch.tensor([1])  # the bar detected as a ring
    kinds = sorted((f.kind, f.category_id, f.true_category_id) for f in _mine(preds))
    assert kinds == [("false_negative", 7, None), ("false_positive", 3, 7)]


@pytest.mark.parametrize("shift, kinds", [(2.0, []), (9.0, ["poor_localisation"]), (30.0, ["false_negative", "false_positive"])])
def test_box_off_by_n_px(shift, kinds):
    preds = _perfect(_gt())
    preds[1]["boxes"] = preds[1]["boxes"] + torch.tensor([shift, 0.0, shift, 0.0])  # the 20 px wide box moved right
    found = _mine(preds, loc_iou=0.7)  # IoU (20 - s) / (20 + s): 0.82, 0.38, 0
    assert sorted(f.kind for f in found) == kinds  # an off box is one failure, not two
    assert all(f.image_id == 12 and f.category_id == 7 for f in found)
    if kinds == ["poor_localisation"]:
        assert found[0].iou == pytest.approx(11 / 29, abs=1e-3) and found[0].box == [10.0, 10.0, 30.0, 34.0]


def test_occlusion_and_truncation_from_boxes_and_from_attributes():
    gt = [{"boxes": torch.tensor([[0.0, 10.0, 20.0, 30.0], [10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([1, 2])}]
    preds = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}]
    a, b = mine_failures(_images(1), gt, preds, category_ids=CATS)
    assert a.occlusion == pytest.approx(0.5, abs=0.06) and a.truncation == 1.0
    assert b.truncation == 0.0
    a2, _ = mine_failures(_images(1), gt, preds, category_ids=CATS, attributes=[[{"occlusion": 0.25, "truncation": 0.4}, {}]])
    assert (a2.occlusion, a2.truncation) == (0.25, 0.4)


def test_ring_colour_is_outside_every_box():
    img = torch.zeros(1, 3, SIZE, SIZE)
    img[:, 0] = 1.0  # red everywhere ...
    img[:, :, 5:29, 5:25] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # ... a green object
    gt = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 29.0]]), "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}]
    (f,) = mine_failures(img, gt, preds, category_ids=CATS)
    assert f.background_mean == pytest.approx([1.0, 0.0, 0.0])


def test_bad_loc_iou():
    with pytest.raises(InputError) as e:
        _mine(_perfect(_gt()), loc_iou=0.05)
    assert e.value.field == "loc_iou"


# -------------------------------------------------------------------------------------- resimulation


def _bank(n: int = 6) -> TensorInstances:
    rgbs, alphas, cats = [], [], []
    for i in range(n):
        a = torch.zeros(1, 20, 16)
        a[:, 2:18, 3:13] = 1.0
        rgbs.append(torch.full((3, 20, 16), 0.2 + 0.1 * i))
        alphas.append(a)
        cats.append(CATS[i % 2])
    return TensorInstances(rgbs, alphas, cats)


def _failure(kind="false_negative", **kw) -> Failure:
    base = {
        "index": 4, "image_index": 0, "image_id": 1, "kind": kind, "category_id": 7, "box": [20.0, 16.0, 36.0, 40.0], "score": 0.0, "iou": 0.0,
        "size": [16.0, 24.0], "aspect": 16 / 24, "center": [28 / SIZE, 28 / SIZE], "occlusion": 0.0, "truncation": 0.0, "background_mean": [0.5, 0.4, 0.3],
    }  # fmt: skip
    base.update(kw)
    return Failure(**base)


STYLE = SceneStyle(fg_size=32, blend_modes=("alpha", "none"))
JITTER = Jitter()


@pytest.mark.parametrize("occlusion", [0.0, 0.4])
def test_resimulated_scenes_keep_the_class_and_stay_in_bounds(occlusion):
    index = InstanceIndex(_bank(), STYLE)
    bg = BackgroundBank(["noise", "gradient"])
    f = _failure(occlusion=occlusion)
    for seed in range(12):
        for p in resimulate(f, index, bg, (SIZE, SIZE), torch.Generator().manual_seed(seed), jitter=JITTER, per_failure=3):
            main = p.objects[p.meta["main_object"]]
            assert main.category_id == 7 and index.foregrounds.category_of(main.instance) == 7
            j = p.meta["jitter"]
            assert JITTER.scale[0] <= j["scale"] <= JITTER.scale[1] and JITTER.aspect[0] <= j["aspect"] <= JITTER.aspect[1]
            angle, tx, ty, shear, sx, sy = main.affine
            assert abs(angle) <= JITTER.rotation and shear == 0.0
            cx, cy = tx / SIZE + 0.5, ty / SIZE + 0.5
            assert abs(cx - f.center[0]) <= JITTER.shift + 1e-9 and abs(cy - f.center[1]) <= JITTER.shift + 1e-9
            bw, bh = index.base_size(main.instance)
            w, h = sx * bw, sy * bh  # pasted box size: within the scale bounds of the failure's, aspect within its bounds
            lo, hi = JITTER.scale[0] / math.sqrt(JITTER.aspect[1]), JITTER.scale[1] * math.sqrt(JITTER.aspect[1])
            assert lo - 1e-9 <= w / f.size[0] <= hi + 1e-9 and lo - 1e-9 <= h / f.size[1] <= hi + 1e-9
            assert JITTER.aspect[0] - 1e-9 <= (w / h) / f.aspect <= JITTER.aspect[1] + 1e-9
            others = [o for k, o in enumerate(p.objects) if k != p.meta["main_object"]]
            assert len(others) <= JITTER.distractors[1] and all(o.category_id != 7 for o in others)
            if occlusion:
                assert p.objects[-1] is not main  # the occluder is drawn over the object
            else:
                assert p.objects[-1] is main
            assert p.meta["failure"]["index"] == 4


def test_hard_negative_for_a_hallucination_has_nothing_of_its_class():
    index = InstanceIndex(_bank(), STYLE)
    f = _failure("false_positive", category_id=3, score=0.9)
    for seed in range(10):
        for p in resimulate(f, index, BackgroundBank(["noise"]), (SIZE, SIZE), torch.Generator().manual_seed(seed)):
            assert p.meta["main_object"] is None and all(o.category_id != 3 for o in p.objects)
            x0, y0, x1, y1 = p.meta["jitter"]["box"]
            for o in p.objects:  # distractor centres are kept off the hallucinated region
                ox, oy = o.affine[1] + SIZE / 2, o.affine[2] + SIZE / 2
                assert not (x0 <= ox <= x1 and y0 <= oy <= y1)


def test_confusion_pastes_the_true_class():
    index = InstanceIndex(_bank(), STYLE)
    f = _failure("false_positive", category_id=3, true_category_id=7)
    (p,) = resimulate(f, index, BackgroundBank(["noise"]), (SIZE, SIZE), torch.Generator().manual_seed(0), per_failure=1)
    assert p.objects[p.meta["main_object"]].category_id == 7


def test_background_is_the_closest_of_the_candidates():
    index = InstanceIndex(_bank(), STYLE)
    bg = BackgroundBank(["noise", "gradient"])
    dists = []
    for k in (1, 8):
        ps = [
            resimulate(_failure(), index, bg, (SIZE, SIZE), torch.Generator().manual_seed(s), jitter=Jitter(background_candidates=k), per_failure=1)[0]
            for s in range(8)
        ]
        dists.append(sum(p.meta["jitter"]["background_distance"] for p in ps))
    assert dists[1] < dists[0]


def test_scenes_replay_exactly_and_use_no_val_pixels():
    index = InstanceIndex(_bank(), STYLE)
    bg = BackgroundBank(["noise", "gradient"])
    f = _failure(crop=torch.zeros(3, 48, 48, dtype=torch.uint8))
    g_crop = _failure(crop=torch.full((3, 48, 48), 255, dtype=torch.uint8))  # other val pixels, same statistics
    a = resimulate(f, index, bg, (SIZE, SIZE), torch.Generator().manual_seed(3))
    b = resimulate(g_crop, index, bg, (SIZE, SIZE), torch.Generator().manual_seed(3))
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    for p in a:
        once = replay_scene(p, index.foregrounds, bg, LABEL_MAP)
        again = replay_scene(p.to_dict(), index.foregrounds, bg, LABEL_MAP)
        assert torch.equal(once.image, again.image)
        assert 7 in once.category_ids  # the failure's object is labelled


def test_class_without_assets_is_skipped():
    index = InstanceIndex(_bank(), STYLE)
    assert resimulate(_failure(category_id=99), index, BackgroundBank(["noise"]), (SIZE, SIZE), torch.Generator()) == []


def test_random_scene_draws_from_the_random_paste_ranges_and_replays():
    from synthloop.loops.imitation_failures import RANDOM_SCALE, RANDOM_SHIFT

    index = InstanceIndex(_bank(), STYLE)
    bg = BackgroundBank(["noise", "gradient"])
    counts, cats = set(), set()
    for seed in range(16):
        p = random_scene(index, bg, (SIZE, SIZE), torch.Generator().manual_seed(seed), jitter=JITTER)
        assert 1 + JITTER.distractors[0] <= len(p.objects) <= 1 + JITTER.distractors[1] == 4 and p.meta["random"]["objects"] == len(p.objects)
        assert "failure" not in p.meta and len({o.blend.mode for o in p.objects}) == 1
        for o in p.objects:
            angle, tx, ty, shear, sx, sy = o.affine
            assert abs(angle) <= JITTER.rotation and RANDOM_SCALE[0] <= sx == sy <= RANDOM_SCALE[1]
            assert abs(tx) <= RANDOM_SHIFT * SIZE and abs(ty) <= RANDOM_SHIFT * SIZE
            assert index.foregrounds.category_of(o.instance) == o.category_id
            cats.add(o.category_id)
        counts.add(len(p.objects))
        again = random_scene(index, bg, (SIZE, SIZE), torch.Generator().manual_seed(seed), jitter=JITTER)
        assert again.to_dict() == p.to_dict()
        a, b = replay_scene(p, index.foregrounds, bg, LABEL_MAP), replay_scene(p.to_dict(), index.foregrounds, bg, LABEL_MAP)
        assert torch.equal(a.image, b.image)
    assert len(counts) > 1 and cats == set(CATS)  # the draws do vary
