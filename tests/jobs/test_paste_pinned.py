"""The paste job's output pinned by sha256 at commit 5554647 (before the sampling speed-ups of
issue 14): for the same config and seed, images, annotations and params must stay byte-identical
to that version, not only across backends and worker counts (which the other tests compare).

A change that alters the output on purpose must say so and update these hashes. (A different
OpenCV / simplejpeg / NumPy build can also change image bytes; the params hashes depend only on
torch's CPU generator.)"""

from __future__ import annotations

import hashlib
import json

import pytest
from paste_helpers import output_files, tiny_config

from synthloop.compose.config import BlendConfig, PlacementConfig, SceneConfig
from synthloop.compose.sampler import sample_scene
from synthloop.data.backgrounds import BackgroundBank
from synthloop.data.builtin import MnistDigits
from synthloop.jobs.paste import run_paste
from synthloop.utils.seeding import make_generator

ALL_MODES = "[none,alpha,gaussian,box,motion,pyramid,poisson]"
JOBS = {
    # per-object blends of every mode, distractors, aspect jitter + shear, procedural and photo backgrounds, artefacts
    "per_object": (
        10,
        [
            "scene.canvas=[96,128]",
            "scene.objects=[2,5]",
            "scene.distractors=[0,2]",
            "scene.distractor_categories=[4]",
            "scene.blend.per=object",
            f"scene.blend.modes={ALL_MODES}",
            "scene.placement.aspect_jitter=0.2",
            "scene.placement.shear=[-10,10]",
            "backgrounds.sources=[procedural,photos]",
            "seed=7",
        ],
        {
            "images": "89cac2713a9ef2ca56fdc826c61504fa1e899e7223dfbc5174308ed2a2cab3c1",
            "annotations.json": "59b7de53ed33bcb863ab081a6cb26d4ceaa0b2f96dc99b6ba1109460960fdacd",
            "params.jsonl": "10fc712367f09ededc34a4b6c14cbe787c83ba9f7ca625f312bdaa73d2b3e93f",
        },
    ),
    # one layout per blend mode, pooled built-in backgrounds, TERSE mask clean-up
    "all_modes_pooled": (
        8,
        [
            "scene.canvas=[80,112]",
            "scene.blend.all_modes=true",
            f"scene.blend.modes={ALL_MODES}",
            "backgrounds.sources=[builtin]",
            "backgrounds.pool=3",
            "scene.mask_cleanup=true",
            "seed=3",
        ],
        {
            "images": "d6a8baca611cf4fda331d7b269882a9d721514c71820ffea06949ca194d3867a",
            "annotations.json": "7122909e6f99d51f2d015b3d9147f877bae6b22474205e9807495cedf0bd8d26",
            "params.jsonl": "5102352eb8a6e8f6da9046ecdd97798571f98ed5e791b7c7f9df6d6c530a078a",
        },
    ),
}


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    images = b"".join(v for name, v in files.items() if name.startswith("images/"))
    return {"images": hashlib.sha256(images).hexdigest()} | {k: hashlib.sha256(files[k]).hexdigest() for k in ("annotations.json", "params.jsonl")}


@pytest.mark.parametrize("name", list(JOBS))
def test_output_is_byte_identical_to_the_pinned_version(name, tmp_path):
    n, overrides, expected = JOBS[name]
    run_paste(tiny_config(n, *overrides), tmp_path)
    files = output_files(tmp_path)
    assert sum(f.startswith("images/") for f in files) == (7 * n if "all_modes" in name else n)
    got = _hashes(files)
    # params first: a sampling change shows as a params mismatch, a compositing one as images only
    assert got["params.jsonl"] == expected["params.jsonl"]
    assert got == expected


# 300 scenes sampled directly (no rendering): every sampler path many times over
SAMPLED_SHA256 = "f2ec8e36cc4cafee66e26e54bc9f1ebb649f8ceb788cbbe32bd978bb9253fe0a"


def test_sampled_params_of_many_scenes_are_pinned():
    digits = MnistDigits.load(0, limit=300)
    backgrounds = BackgroundBank(["procedural", "photos"])
    configs = [
        SceneConfig(canvas=(96, 128), objects=(1, 6), distractors=(0, 2), distractor_categories=[2, 7]),
        SceneConfig(
            canvas=(60, 200),
            objects=(0, 3),
            blend=BlendConfig(per="object", modes=["gaussian", "box", "motion", "pyramid"]),
            placement=PlacementConfig(aspect_jitter=0.5, shear=(-20.0, 20.0), max_iou=0.1, max_truncation=0.0, max_tries=4),
        ),
    ]
    h = hashlib.sha256()
    for k, cfg in enumerate(configs):
        for i in range(150):
            params = sample_scene(cfg, digits, backgrounds, make_generator(11, k, i), seed=i)
            h.update(json.dumps(params.to_dict(), sort_keys=True).encode())
    assert h.hexdigest() == SAMPLED_SHA256
