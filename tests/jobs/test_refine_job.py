"""The refine job (:func:`synthloop.jobs.refine.run_refine`): resume, config checks, trainer choice."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from synthloop.config import build_config
from synthloop.errors import InputError
from synthloop.jobs.refine import (
    RESUMABLE_KEYS,
    RefineConfig,
    build_trainer,
    run_refine,
)
from synthloop.loops.refine.common import Domain
from synthloop.loops.refine.cyclegan import CycleGANTrainer
from synthloop.loops.refine.mrgan import MrGANTrainer
from synthloop.loops.refine.pixelda import PixelDATrainer

from refine_helpers import TINY, _config, _folder, data  # noqa: F401  (data is a fixture)

def test_interrupted_run_resumes_to_the_same_result(data, monkeypatch):
    tmp_path, syn, real = data
    cfg = build_config(RefineConfig, yaml.safe_load(_config(tmp_path, syn, real).read_text()), ["cyclegan.steps=5", "evaluation.enabled=false"])
    run_refine(cfg, tmp_path / "straight")

    original = CycleGANTrainer.train_step

    def crash_at_step_4(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(CycleGANTrainer, "train_step", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_refine(cfg, tmp_path / "interrupted")
    assert len(json.loads((tmp_path / "interrupted" / "losses.json").read_text())) == 2  # last checkpoint: step 2
    monkeypatch.setattr(CycleGANTrainer, "train_step", original)
    run_refine(cfg, tmp_path / "interrupted", resume=True)
    a = (tmp_path / "straight" / "losses.json").read_text()
    b = (tmp_path / "interrupted" / "losses.json").read_text()
    assert a == b
    for p in (tmp_path / "straight" / "refined").rglob("*.png"):
        q = tmp_path / "interrupted" / "refined" / p.relative_to(tmp_path / "straight" / "refined")
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))


def test_resume_refuses_a_changed_training_config(data):
    tmp_path, syn, real = data
    base = yaml.safe_load(_config(tmp_path, syn, real).read_text())
    cfg = build_config(RefineConfig, base, ["cyclegan.steps=2", "evaluation.enabled=false"])
    run_refine(cfg, tmp_path / "out")
    changed = build_config(RefineConfig, base, ["cyclegan.steps=2", "evaluation.enabled=false", "seed=1", "cyclegan.lambda_cycle=5"])
    with pytest.raises(InputError, match=r"different configuration \(changed: cyclegan\.lambda_cycle: 10\.0 -> 5\.0, seed: 0 -> 1\)") as e:
        run_refine(changed, tmp_path / "out", resume=True)
    assert ", ".join(RESUMABLE_KEYS) in e.value.message
    lines = []
    ok = build_config(RefineConfig, base, ["cyclegan.steps=2", "evaluation.enabled=true", "log_every=7"])
    run_refine(ok, tmp_path / "out", resume=True, log=lines.append)
    assert lines[0] == "resumed cyclegan at step 2/2"


def test_build_trainer_follows_the_method():
    x = torch.rand(8, 1, 8, 8)
    syn, real = Domain(x, torch.arange(8) % 2), Domain(x.flip(0), torch.arange(8) % 2)
    data = {"synthetic": "s", "real": "r"}
    tiny = {"generator": {"base_channels": 2, "n_blocks": 1}, "discriminator": {"width": 0.0625}}
    kinds = {"cyclegan": CycleGANTrainer, "mrgan": MrGANTrainer, "pixelda": PixelDATrainer}
    for method, kind in kinds.items():
        section = {"stage1": tiny, "stage2": tiny} if method == "mrgan" else ({"discriminator": tiny["discriminator"]} if method == "pixelda" else tiny)
        cfg = RefineConfig.model_validate({"method": method, "device": "cpu", "data": data, method: section})
        assert isinstance(build_trainer(cfg, syn, real, num_classes=2), kind)
