"""What the ``synthloop terse`` job assembles before it runs: the real / eval sets resized to the
job's image size (:class:`LoadedSet`), the cut-outs and backgrounds, the target detector (built,
optionally loaded from a checkpoint), and AP on a resized set scored in original pixels."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthloop.data.dataset import Dataset
from synthloop.errors import InputError
from synthloop.jobs.terse_detection_config import MODEL_FILE, MODEL_JSON, SHIFTED, DatasetSource, TerseDetectionJobConfig
from synthloop.models.build import build_detector
from synthloop.utils.progress import Progress


@dataclass
class LoadedSet:
    """A data set resized to the job's image size: ``images`` ``(N, 3, H, W)`` in [0, 1],
    torchvision ``targets`` in resized pixels, and per image the ``(sx, sy)`` scale from the
    original to the resized coordinates."""

    dataset: Dataset
    file: str
    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    scales: list[tuple[float, float]]


@dataclass
class JobData:
    """``eval`` is the first evaluation set (``None`` without ``eval``); ``eval_sets`` every one by name, in config order."""

    real: LoadedSet
    eval: LoadedSet | None
    label_map: Any
    foregrounds: Any
    backgrounds: Any
    foreground_report: str = ""
    eval_sets: dict[str, LoadedSet] = field(default_factory=dict)


def _read_source(src: DatasetSource, field: str, progress: Progress | None = None) -> tuple[Dataset, str]:
    from synthloop.data.coco import find_coco_json, read_coco

    if src.builtin == "digit_scenes":
        from synthloop.compose.digit_scenes import digit_scenes

        paths = digit_scenes(src.seed, sizes=src.sizes, progress=progress)  # first use: announces and shows the cache build
        file = getattr(paths, src.split)
        ds = read_coco(file)
    elif src.builtin == SHIFTED:
        ds, file = _shifted(src, field)
        return ds, file  # generated at exactly ``limit`` images: nothing to cut
    else:
        assert src.annotations is not None
        file = find_coco_json(src.annotations)
        ds = read_coco(file, src.images, check_images=True)
    if src.limit is not None:
        if src.builtin is None and src.limit < len(ds.images):  # a user's own set, cut short: say so
            warnings.warn(f"{field}.limit keeps {src.limit} of the {len(ds.images)} images of {file}", stacklevel=2)
        ds = Dataset(root=ds.root, categories=ds.categories, images=ds.images[: src.limit], info=ds.info)
    if not ds.images:
        raise InputError("the data set has no images", file=file, field=f"{field}.images")
    return ds, str(file)


def _shifted(src: DatasetSource, field: str) -> tuple[Dataset, str]:
    """The built-in shifted test set (generated once and cached), ``limit`` images (default the generator's)."""
    import inspect

    from synthloop.compose import digit_scenes_shifted as shifted
    from synthloop.data.coco import ANNOTATIONS_FILE

    kwargs: dict[str, Any] = {"seed": src.seed, "count": src.limit or shifted.DEFAULT_COUNT}
    if src.shift is not None:
        if "shift" not in inspect.signature(shifted.load_shifted_test).parameters:  # presets arrive with a later version of the generator
            raise InputError(f"this synthloop's shifted test set has no shift presets; leave {field}.shift out", field=f"{field}.shift")
        kwargs["shift"] = src.shift
    ds = shifted.load_shifted_test(**kwargs)
    return ds, str(Path(ds.root) / ANNOTATIONS_FILE)


def _load_resized(ds: Dataset, file: str, size: tuple[int, int], label_map: Any, field: str) -> LoadedSet:
    """Decode, resize and label every image of ``ds`` (see the module docstring for box rules)."""
    from synthloop.data.images import load_image
    from synthloop.models.detection import MIN_BOX_SIZE

    H, W = size
    images = torch.empty(len(ds.images), 3, H, W)
    targets, scales = [], []
    for i, entry in enumerate(ds.images):
        arr = load_image(ds.image_path(entry), mode="RGB")
        if arr.shape[:2] != (entry.height, entry.width):
            raise InputError(
                f"the image file is {arr.shape[1]}x{arr.shape[0]} but the annotations say {entry.width}x{entry.height}",
                file=file,
                field=f"images[{i}].width",
            )
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
        if (entry.height, entry.width) != (H, W):
            img = F.interpolate(img[None], size=(H, W), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
        images[i] = img
        sx, sy = W / entry.width, H / entry.height
        target = label_map.target(entry.annotations, where=f"images[{i}].annotations")
        boxes = target["boxes"]
        if boxes.numel():
            # boxes within the reader's 1 px tolerance may stick out: clip them to the image
            boxes = torch.stack([boxes[:, 0].clamp(0, entry.width), boxes[:, 1].clamp(0, entry.height),
                                 boxes[:, 2].clamp(0, entry.width), boxes[:, 3].clamp(0, entry.height)], 1)  # fmt: skip
            boxes = boxes * torch.tensor([sx, sy, sx, sy])
            small = ((boxes[:, 2] - boxes[:, 0]) < MIN_BOX_SIZE) | ((boxes[:, 3] - boxes[:, 1]) < MIN_BOX_SIZE)
            if bool(small.any()):
                k = int(small.nonzero()[0])
                anns = [a for a in entry.annotations if not a.iscrowd]
                ann = anns[k]
                raise InputError(
                    f"annotation id {ann.id} (bbox {list(ann.bbox)}) of image {entry.file_name!r} is less than "
                    f"{MIN_BOX_SIZE:g} px wide or high at image_size {H}x{W}; remove it or use a larger image_size",
                    file=file,
                    field=f"images[{i}].annotations[{entry.annotations.index(ann)}].bbox",
                )
        targets.append({"boxes": boxes.float(), "labels": target["labels"]})
        scales.append((sx, sy))
    return LoadedSet(ds, file, images, targets, scales)


def _check_eval_categories(real: Dataset, other: Dataset, file: str) -> None:
    names = {c.id: c.name for c in real.categories}
    for i, c in enumerate(other.categories):
        if c.id not in names:
            raise InputError(f"category {c.name!r} (id {c.id}) is not a category of the real set (ids {sorted(names)})", file=file, field=f"categories[{i}]")
        if names[c.id] != c.name:
            raise InputError(f"category id {c.id} is {c.name!r} here but {names[c.id]!r} in the real set", file=file, field=f"categories[{i}].name")


def _foregrounds(cfg: TerseDetectionJobConfig, real: Dataset, real_file: str) -> tuple[Any, str]:
    """The foreground bank (a renderer source) and a one-line clean-up summary."""
    from synthloop.compose.sources import BankInstances
    from synthloop.data.instances import InstanceBank

    fc = cfg.foregrounds
    known = {c.id: c.name for c in real.categories}
    if fc.source == "digits":
        from synthloop.compose.digit_scenes import digit_bank
        from synthloop.data.mnist import SPLIT_SIZES
        from synthloop.utils.seeding import make_generator

        n = min(fc.digits, SPLIT_SIZES["train"])
        idx = torch.randperm(SPLIT_SIZES["train"], generator=make_generator(cfg.seed, "job-digits"))[:n]
        bank = digit_bank(indices=idx, generator=make_generator(cfg.seed, "job-digit-tints"))
        cats = sorted(set(bank.category_ids))
        for c in cats:
            if c not in known:
                raise InputError(
                    f"the digits' category id {c} (digit {c - 1}) is not a category of the real set (ids {sorted(known)})",
                    file=real_file,
                    field="categories",
                )
        if fc.category_ids is not None or fc.limit is not None:
            keep = [i for i, c in enumerate(bank.category_ids) if fc.category_ids is None or c in fc.category_ids][: fc.limit]
            from synthloop.compose.sources import TensorInstances

            bank = TensorInstances([bank.rgbs[i] for i in keep], [bank.alphas[i] for i in keep], [bank.category_ids[i] for i in keep])
        summary = f"{len(bank)} MNIST training digits"
        source: Any = bank
    else:
        if fc.source == "real":
            bank = InstanceBank.from_coco(real, category_ids=fc.category_ids, config=fc.bank)
            where = real_file
        elif fc.source == "coco":
            assert fc.coco is not None
            bank = InstanceBank.from_coco(fc.coco.json_file, image_root=fc.coco.images, category_ids=fc.category_ids or fc.coco.category_ids, config=fc.bank)
            where = str(fc.coco.json_file)
        else:
            assert fc.folder is not None
            if not fc.folder.is_dir():
                raise InputError("no such folder", file=fc.folder, field="foregrounds.folder")
            build = InstanceBank.from_rgba_folder if fc.source == "rgba_folder" else InstanceBank.from_mask_pairs
            bank = build(fc.folder, categories=list(real.categories), config=fc.bank)
            where = str(fc.folder)
            if fc.category_ids is not None:
                bank = InstanceBank([i for i in bank.instances if i.category_id in fc.category_ids], bank.categories, bank.report)
        used = {inst.category_id: inst.category_name for inst in bank.instances}
        for cid, name in sorted(used.items()):
            if cid not in known:
                raise InputError(f"foreground category {name!r} (id {cid}) is not a category of the real set {real_file} (categories: "
                                 + ", ".join(f"{i} {n!r}" for i, n in sorted(known.items())) + ")", file=where, field="foregrounds.categories")  # fmt: skip
            if known[cid] != name:
                raise InputError(f"foreground category id {cid} is {name!r} but {known[cid]!r} in the real set", file=where, field="foregrounds.categories")
        if fc.limit is not None:
            bank = InstanceBank(bank.instances[: fc.limit], bank.categories, bank.report)
        if len(bank) == 0:
            raise InputError(f"no usable cut-outs after the clean-up ({bank.report})", file=where, field="foregrounds")
        summary = f"{len(bank)} cut-outs from {fc.source} ({where}); clean-up: {bank.report}"
        source = BankInstances(bank)
    return source, summary


def load_job_data(cfg: TerseDetectionJobConfig, progress: Progress | None = None) -> JobData:
    """Read, validate and resize the real (and eval) set, build the foreground and background banks.

    ``progress`` sees the built-in data's one-time cache build (a message naming the folder, then
    per-split progress), if one is needed."""
    from synthloop.jobs.paste_assets import build_backgrounds
    from synthloop.models.detection import LabelMap

    real_ds, real_file = _read_source(cfg.real, "real", progress)
    if not real_ds.categories:
        raise InputError("the real set has no categories", file=real_file, field="categories")
    if not any(not a.iscrowd for im in real_ds.images for a in im.annotations):
        raise InputError("the real set has no (non-crowd) object to learn from", file=real_file, field="annotations")
    label_map = LabelMap.from_categories(real_ds.categories)
    size = tuple(cfg.image_size)
    real = _load_resized(real_ds, real_file, size, label_map, "real")
    eval_sets: dict[str, LoadedSet] = {}
    for name, src, where in cfg.eval_sources():
        ev_ds, ev_file = _read_source(src, where, progress)
        _check_eval_categories(real_ds, ev_ds, ev_file)
        # scored against the real set's categories: the model may predict any of them, and
        # categories without ground truth here are left out of the AP mean by pycocotools
        ev_ds = Dataset(root=ev_ds.root, categories=list(real_ds.categories), images=ev_ds.images, info=ev_ds.info)
        if not any(not a.iscrowd for im in ev_ds.images for a in im.annotations):
            raise InputError("the evaluation set has no (non-crowd) object, so AP is undefined", file=ev_file, field="annotations")
        eval_sets[name] = _load_resized(ev_ds, ev_file, size, label_map, where)
    foregrounds, summary = _foregrounds(cfg, real_ds, real_file)
    backgrounds = build_backgrounds(cfg.backgrounds, cfg.seed)
    first = next(iter(eval_sets.values()), None)
    return JobData(real, first, label_map, foregrounds, backgrounds, summary, eval_sets)


def build_target(cfg: TerseDetectionJobConfig, label_map: Any, source: str) -> Any:
    from synthloop.loops.training import scoped_rng
    from synthloop.models.detection import DetectionTarget
    from synthloop.utils.seeding import derive_seed

    need = label_map.num_classes
    for key, given in (("model.num_classes", cfg.model.num_classes), ("model.args.num_classes", cfg.model.args.get("num_classes"))):
        if given is not None and int(given) != need:
            raise InputError(
                f"num_classes {given} does not match the real set: {label_map.num_categories} categories "
                f"({', '.join(label_map.names)}) + the background = {need}",
                file=source,
                field=key,
            )
    with scoped_rng(derive_seed(cfg.seed, "job-model-init")):  # weight initialisation draws from the global RNG
        model = build_detector({"name": cfg.model.name, "args": cfg.model.args}, need, cfg.image_size)
    if cfg.model.checkpoint is not None:
        _load_weights(model, cfg.model.checkpoint)
    return DetectionTarget(model, label_map, image_size=tuple(cfg.image_size), hard_threshold=cfg.loop.hard_threshold, name="model")


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict from ``path``: a synthloop checkpoint holding ``model`` (this job's
    ``model.pt``) or a plain ``torch.save`` d state dict."""
    if not Path(path).is_file():
        raise InputError("checkpoint not found", file=path, field="model.checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise InputError(f"cannot read the checkpoint: {exc}", file=path, field="model.checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError("not a state dict", file=path, field="model.checkpoint")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(
            "the weights do not fit the model (another architecture, or another number of categories): " + " ".join(first[:3]),
            file=path,
            field="model.checkpoint",
        ) from None


def load_detector(run_dir: str | Path) -> Any:
    """The fine-tuned :class:`~synthloop.models.detection.DetectionTarget` of a finished run
    folder, rebuilt from ``model.json`` and ``model.pt``."""
    from synthloop.loops.checkpoint import load_checkpoint
    from synthloop.models.detection import DetectionTarget, LabelMap

    run_dir = Path(run_dir)
    spec_file = run_dir / MODEL_JSON
    if not spec_file.is_file():
        raise InputError("no model.json here (is this a finished synthloop terse run?)", file=spec_file)
    spec = json.loads(spec_file.read_text())
    label_map = LabelMap(tuple(spec["category_ids"]), tuple(spec["category_names"]))
    model = build_detector(spec, label_map.num_classes, spec["image_size"])
    model.load_state_dict(load_checkpoint(run_dir / MODEL_FILE)["model"])
    return DetectionTarget(model, label_map, image_size=tuple(spec["image_size"]))


def evaluate(target: Any, loaded: LoadedSet, *, batch_size: int = 16) -> dict[str, float]:
    """COCO AP (``ap50`` ... ``ap``) of ``target`` on ``loaded``: detections on the resized images
    are scaled back to each image's own pixels and scored by pycocotools against the original
    annotations (:func:`~synthloop.metrics.detection.coco_ap`). When every image already has the
    job's size this is :func:`~synthloop.loops.detection_training.evaluate_detector`."""
    from synthloop.loops.detection_training import evaluate_detector
    from synthloop.metrics.classification import model_device
    from synthloop.metrics.detection import coco_ap
    from synthloop.models.targets import freeze

    H, W = loaded.images.shape[-2:]
    if all((e.height, e.width) == (H, W) for e in loaded.dataset.images):
        return evaluate_detector(target, loaded.dataset, batch_size=batch_size)
    # evaluate_detector reads images at their own size, which differs here, so the resized
    # tensors are run and the boxes mapped back before pycocotools scores them
    device = model_device(target.model)
    records: list[dict[str, Any]] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, loaded.images.shape[0], batch_size):
            batch = loaded.images[start : start + batch_size].to(device)
            for j, det in enumerate(target.predict(batch)):
                i = start + j
                sx, sy = loaded.scales[i]
                det = dict(det, boxes=det["boxes"].cpu() / torch.tensor([sx, sy, sx, sy]))
                records += target.label_map.to_coco(loaded.dataset.images[i].id, det)
    return coco_ap(loaded.dataset, records)
