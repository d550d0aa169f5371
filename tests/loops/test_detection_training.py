"""train_detector / evaluate_detector on tiny synthetic squares."""

from __future__ import annotations

import copy

import pytest
import torch

from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.errors import InputError
from synthloop.loops import detection_training as dt
from synthloop.models.detection import DetectionTarget, LabelMap, SmallDetector

CATS = (Category(id=1, name="red"), Category(id=2, name="green"))


def _squares(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.2
    targets = []
    for i in range(n):
        s = int(torch.randint(8, 14, (1,), generator=g))
        x, y = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        label = int(torch.randint(1, 3, (1,), generator=g))
        images[i, label - 1, y : y + s, x : x + s] = 1.0
        targets.append({"boxes": torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32), "labels": torch.tensor([label])})
    return images, targets


def _target(seed: int = 0) -> DetectionTarget:
    torch.manual_seed(seed)
    model = SmallDetector(num_classes=3, image_size=32, width=8, fpn_channels=32, head_convs=1)
    return DetectionTarget(model, LabelMap.from_categories(CATS))


def _weights(t: DetectionTarget) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_training_lowers_the_loss_and_is_deterministic():
    images, targets = _squares(16, 0)
    a, b = _target(), _target()
    log = dt.train_detector(a, images, targets, epochs=4, batch_size=8, lr=3e-3, seed=3)
    dt.train_detector(b, images, targets, epochs=4, batch_size=8, lr=3e-3, seed=3)
    assert log.steps == 8 and log.images_seen == 64 and len(log.epoch_losses) == 4
    assert log.epoch_losses[-1] < log.epoch_losses[0]
    assert torch.equal(_weights(a), _weights(b))
    c = _target()
    dt.train_detector(c, images, targets, epochs=4, batch_size=8, lr=3e-3, seed=4)
    assert not torch.equal(_weights(a), _weights(c))


def test_synthetic_mix_uses_exact_ratio_and_an_epoch_is_one_pass_over_real():
    images, targets = _squares(8, 0)
    syn, syn_t = _squares(20, 1)
    seen = []
    t = _target()
    orig = t.loss

    def spy(batch, tgts, **kw):
        seen.append(batch.detach().clone())
        return orig(batch, tgts, **kw)

    t.loss = spy  # type: ignore[method-assign]
    log = dt.train_detector(t, images, targets, synthetic_images=syn, synthetic_targets=syn_t, ratio="1:3", epochs=1, batch_size=8, seed=0)
    assert log.steps == 4  # 8 real at 2 per batch
    assert log.images_seen == 32
    for batch in seen:
        real = sum(any(torch.equal(x, r) for r in images) for x in batch)
        fake = sum(any(torch.equal(x, s) for s in syn) for x in batch)
        assert (real, fake) == (2, 6)


def test_augment_flips_boxes_with_the_image():
    images, targets = _squares(6, 2)
    g = torch.Generator().manual_seed(0)
    out, tg = dt._augment(images.clone(), [dict(t) for t in targets], g)
    for x, t_in, t_out, src in zip(out, targets, tg, images):
        x0, y0, x1, y1 = (int(v) for v in t_out["boxes"][0])
        lab = int(t_in["labels"][0])
        # the square is still the brightest patch, now inside the (possibly flipped) box
        inside = x[:, y0:y1, x0:x1].amax(0).mean()
        assert inside > 0.99
        assert sorted(x.flatten().tolist()) == pytest.approx(sorted(src.flatten().tolist()))
        assert lab in (1, 2)


def test_evaluate_detector_reports_coco_ap(tmp_path):
    images, targets = _squares(4, 5)
    t = _target()
    from synthloop.data.images import encode_png

    entries = []
    (tmp_path / "images").mkdir()
    for i, (x, tgt) in enumerate(zip(images, targets)):
        name = f"{i}.png"
        (tmp_path / "images" / name).write_bytes(encode_png((x.permute(1, 2, 0) * 255).round().byte().numpy()))
        x0, y0, x1, y1 = tgt["boxes"][0].tolist()
        ann = Annotation(category_id=int(tgt["labels"][0]), bbox=(x0, y0, x1 - x0, y1 - y0))
        entries.append(ImageEntry(id=i + 1, file_name=name, width=32, height=32, annotations=[ann]))
    ds = Dataset(images=entries, categories=list(CATS), root=tmp_path / "images")
    # an untrained FCOS scores the background channel too; those detections must not leak out
    assert all(bool((d["labels"] >= 1).all()) for d in t.predict(images))
    ap = dt.evaluate_detector(t, ds, batch_size=2)
    assert set(ap) == {"ap50", "ap60", "ap70", "ap80", "ap"}
    assert all(0.0 <= v <= 1.0 for v in ap.values())


def test_bad_input_is_named():
    images, targets = _squares(4, 0)
    t = _target()
    with pytest.raises(InputError, match="together"):
        dt.train_detector(t, images, targets, synthetic_images=images)
    with pytest.raises(InputError, match="render them"):
        dt.train_detector(t, images, targets, synthetic_images=torch.rand(2, 3, 16, 16), synthetic_targets=targets[:2])
    with pytest.raises(InputError, match="targets for"):
        dt.train_detector(t, images, targets[:3])
    with pytest.raises(InputError, match="schedule"):
        dt.train_detector(t, images, targets, schedule="step")
    with pytest.raises(InputError, match="batch_size"):
        dt.train_detector(t, images, targets, synthetic_images=images, synthetic_targets=targets, ratio="1:2", batch_size=8)
    before = copy.deepcopy(t.model.state_dict())
    with pytest.raises(InputError, match="loss became"):
        dt.train_detector(t, images * float("nan"), targets, epochs=1, batch_size=4)
    assert before.keys() == t.model.state_dict().keys()


def test_trains_in_train_mode_and_restores_the_callers_mode():
    images, targets = _squares(8, 0)
    t = _target()
    t.model.eval()
    bn = next(m for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    dt.train_detector(t, images, targets, epochs=1, batch_size=4)
    assert not torch.equal(bn.running_mean, before)  # batch statistics were used and tracked
    assert not t.model.training and not bn.training
