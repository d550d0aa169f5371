"""Property-based fuzz targets for every reader of untrusted files (shared by
``tests/data/test_fuzz_readers.py`` and ``benchmarks/reliability_fuzz.py``).

Each target draws a structurally plausible but broken input (a valid document with mutations:
values of the wrong type, missing or extra keys, negative / huge / NaN numbers, wrong nesting;
then sometimes the serialised file truncated, flipped, replaced by random bytes or by invalid
UTF-8), writes it into a fresh folder and calls the reader. :func:`classify` sorts the outcome:

- ``ok``: read without an error;
- ``clear``: an :class:`~synthloop.errors.InputError` whose message names a file of the case;
- ``unclear``: an ``InputError`` naming neither a file of the case nor a field;
- ``crash``: any other exception (a traceback for the user).
"""

from __future__ import annotations

import copy
import io
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import yaml
from hypothesis import strategies as st

from synthloop.errors import InputError

SPECIAL_NUMBERS = [0, -1, 1, 2, 3, 255, 2**31, -(2**31), 2**63, 2**64 + 1, 10**30, 0.5, -0.0, 1e-320, 1e308, -1e308, math.nan, math.inf, -math.inf, True, False]
SPECIAL_STRINGS = [
    "",
    " ",
    "a",
    "0",
    "1.5",
    "nan",
    "-1",
    "../../etc/passwd",
    "/etc/passwd",
    "C:\\x.png",
    "x\x00y",
    "images/x.png",
    "é€😀",
    "<&>",
    "a" * 300,
    "true",
    "null",
]

scalars = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.sampled_from(SPECIAL_STRINGS),
    st.none(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
"""A JSON-like value: scalars, lists and dicts of them."""


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple, op: str, value: Any, key: str) -> Any:
    if not path:
        return value if op != "wrap" else [doc]
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = [parent[last]] if not isinstance(parent[last], list) else {"x": parent[last]}
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif isinstance(parent, dict):  # add a key next to it
        parent[key] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 4) -> Any:
    """``base`` with up to ``max_mutations`` random edits (replace / delete / wrap / duplicate / add)."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, max_mutations))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "wrap", "duplicate", "add"]))
        doc = _mutate(doc, path, op, draw(junk), draw(st.text(max_size=6)))
    return doc


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` as it is (most often), truncated, with flipped bytes, replaced by random bytes,
    empty, or with invalid UTF-8 inserted."""
    how = draw(st.sampled_from(["as_is"] * 6 + ["truncate", "flip", "random", "empty", "bad_utf8"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    if how == "random":
        return draw(st.binary(max_size=200))
    if how == "empty":
        return b""
    if how == "bad_utf8":
        k = draw(st.integers(0, len(data)))
        return data[:k] + b"\xff\xfe\x80" + data[k:]
    return data


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # NaN / Infinity written as JSON's non-standard tokens


def _yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def _png(width: int = 30, height: int = 20) -> bytes:
    from synthloop.data.images import encode_png

    return encode_png(np.zeros((height, width, 3), np.uint8))


@dataclass
class Target:
    """``cases`` draws ``(files, args)``: file contents by relative path and reader arguments;
    ``read(folder, args)`` runs the reader on the files written under ``folder``."""

    name: str
    cases: st.SearchStrategy
    read: Callable[[Path, dict], Any]


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


# ---------------------------------------------------------------------------------------- COCO

COCO_BASE = {
    "images": [{"id": 1, "file_name": "images/x.png", "width": 30, "height": 20}, {"id": 2, "file_name": "images/y.png", "width": 30, "height": 20}],
    "categories": [{"id": 1, "name": "dog", "supercategory": "animal"}, {"id": 3, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0, "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 1, "segmentation": {"size": [20, 30], "counts": [0, 2, 18, 2, 578]}},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [3, 2, 6, 4], "iscrowd": 0, "segmentation": None, "attributes": {"visibility": 0.5}},
    ],
}


def _compressed_rle() -> dict:
    from synthloop.data.coco import mask_to_rle

    m = np.zeros((20, 30), bool)
    m[2:6, 3:9] = True
    rle = mask_to_rle(m)
    return {"size": list(rle["size"]), "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]}


COCO_BASE["annotations"][2]["segmentation"] = _compressed_rle()


@st.composite
def coco_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    doc = draw(mutated(COCO_BASE, max_mutations=draw(st.sampled_from([1, 2, 4]))))
    files = {"annotations.json": draw(corrupted(_json(doc))), "images/x.png": draw(corrupted(_png())), "images/y.png": _png()}
    return files, {"check_images": draw(st.booleans())}


def read_coco_case(folder: Path, args: dict) -> Any:
    from synthloop.data.coco import read_coco

    return read_coco(folder / "annotations.json", folder, check_images=args["check_images"])


# ---------------------------------------------------------------------------------------- YOLO

YOLO_BASE = {"train": "images", "val": "list.txt", "names": ["dog", "cat"], "nc": 2}
LABEL_TOKENS = [
    "0",
    "1",
    "2",
    "-1",
    "0.5",
    "0.25",
    "1.0",
    "0.0",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "-0.0",
    "abc",
    "",
    "99999999999999999999",
    "0x10",
    "1_0",
    "1e-5",
    "١",
]


@st.composite
def yolo_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    meta = draw(mutated(YOLO_BASE, max_mutations=draw(st.sampled_from([0, 1, 2]))))
    lines = draw(st.lists(st.lists(st.sampled_from(LABEL_TOKENS), max_size=11).map(" ".join), max_size=4))
    lines = ["0 0.5 0.5 0.2 0.2", "1 0.1 0.1 0.4 0.1 0.4 0.5"] if draw(st.booleans()) and not lines else lines
    listing = draw(
        st.lists(
            st.sampled_from(["./images/x.png", "images/x.png", "images/missing.png", "../x.png", "/etc/passwd", "images", "", "images/../images/x.png"]),
            max_size=3,
        )
    )
    files = {
        "data.yaml": draw(corrupted(_yaml(meta))),
        "labels/x.txt": draw(corrupted("\n".join(lines).encode())),
        "images/x.png": draw(corrupted(_png())),
        "list.txt": "\n".join(listing).encode(),
    }
    return files, {}


def read_yolo_case(folder: Path, args: dict) -> Any:
    from synthloop.data.yolo import read_yolo

    return read_yolo(folder)


# ----------------------------------------------------------------------------------------- VOC

VOC_BASE = {
    "filename": "x.png",
    "size": {"width": 30, "height": 20, "depth": 3},
    "object": [
        {"name": "dog", "difficult": 0, "truncated": 1, "bndbox": {"xmin": 1, "ymin": 2, "xmax": 10, "ymax": 20}},
        {"name": "cat", "bndbox": {"xmin": 5, "ymin": 5, "xmax": 6, "ymax": 6}},
    ],
}
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">'
    '<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"><!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">'
    '<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"><!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">'
    '<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]><annotation><filename>&lol9;</filename></annotation>'
)
XXE = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation><filename>&x;</filename></annotation>'


def _xml(tag: str, value: Any) -> str:
    tag = tag if tag[:1].isalpha() and tag.isalnum() else f"k{abs(hash(tag)) % 97}"
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(str(k), v) for k, v in value.items()) + f"</{tag}>"
    if isinstance(value, list):
        return "".join(_xml(tag, v) for v in value)
    return f"<{tag}>{escape(str(value))}</{tag}>"


@st.composite
def voc_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    doc = draw(mutated(VOC_BASE, max_mutations=draw(st.sampled_from([1, 2, 4]))))
    xml = draw(st.sampled_from([_xml("annotation", doc)] * 20 + [BILLION_LAUGHS, XXE, _xml("other", doc), _xml("annotation", [doc, doc])]))
    files = {"Annotations/x.xml": draw(corrupted(xml.encode()))}
    if draw(st.booleans()):
        ids = draw(st.lists(st.sampled_from(["x", "y", "../x", "/etc/passwd", "x 1", "x -1", "", "a/b", "\x00"]), max_size=3))
        files["ImageSets/Main/train.txt"] = draw(corrupted("\n".join(ids).encode()))
    return files, {"split": draw(st.sampled_from([None, None, "train", "val"]))}


def read_voc_case(folder: Path, args: dict) -> Any:
    from synthloop.data.voc import read_voc

    return read_voc(folder, split=args["split"])


# ------------------------------------------------------------------------------- YAML configs


def _config_bases() -> dict[str, tuple[type, dict]]:
    from synthloop.jobs.paste_config import load_paste_config, resolved_dict
    from synthloop.jobs.refine import RefineConfig
    from synthloop.jobs.render import RenderJobConfig
    from synthloop.jobs.terse_detection_config import TerseDetectionJobConfig
    from synthloop.jobs.terse_mnist import TerseMnistConfig

    refine = {"data": {"synthetic": "syn", "real": "real"}}
    return {
        "paste": (None, resolved_dict(load_paste_config(None))),
        "render": (RenderJobConfig, RenderJobConfig().to_dict()),
        "refine": (RefineConfig, RefineConfig.model_validate(refine).to_dict()),
        "terse": (TerseDetectionJobConfig, TerseDetectionJobConfig.model_construct().model_dump(mode="json")),
        "terse-train": (TerseMnistConfig, TerseMnistConfig().to_dict()),
    }


_CONFIGS: dict[str, tuple[type, dict]] = {}


@st.composite
def config_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    if not _CONFIGS:
        _CONFIGS.update(_config_bases())
    kind = draw(st.sampled_from(sorted(_CONFIGS)))
    doc = draw(mutated(_CONFIGS[kind][1], max_mutations=draw(st.sampled_from([1, 2, 3]))))
    text = draw(
        st.sampled_from([_yaml(doc)] * 10 + [b"a: &a [*a]\n", b"!!python/object/apply:os.system ['true']\n", b"- [" * 50 + b"\n", b"a: 1\na: 2\n", b"\t- x"])
    )
    return {"config.yaml": draw(corrupted(text))}, {"kind": kind}


def read_config_case(folder: Path, args: dict) -> Any:
    from synthloop.config import load_config
    from synthloop.jobs.paste_config import load_paste_config

    if not _CONFIGS:
        _CONFIGS.update(_config_bases())
    model = _CONFIGS[args["kind"]][0]
    if model is None:
        return load_paste_config(folder / "config.yaml")
    return load_config(model, folder / "config.yaml")


# ------------------------------------------------------------------------------ params.jsonl


def _params_base() -> dict:
    from synthloop.compose.params import ArtefactParams, BlendSpec, CutoutFrame, ObjectParams, SceneParams

    scene = SceneParams(
        canvas=(32, 48),
        background={"source": "gradient", "index": 0, "flip": False},
        objects=[
            ObjectParams(3, 1, [10.0, 16.0, 20.0, 0.0, 1.0, 1.0], blend=BlendSpec("gaussian", {"sigma": 1.5})),
            ObjectParams(4, 2, [0.0, 5.0, 5.0, 0.1, 0.5, 0.5], None, distractor=True),
        ],
        artefacts=[ArtefactParams(1, [0.0, 8.0, 8.0, 0.0, 1.0, 1.0])],
        seed=7,
        frame=CutoutFrame(28, 0.8),
        min_visibility=0.25,
    )
    return {"id": 0, "file_name": "images/000000.png", "params": scene.to_dict()}


PARAMS_BASE = _params_base()


@st.composite
def params_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    records = [draw(mutated(PARAMS_BASE, max_mutations=draw(st.sampled_from([1, 2, 4])))) for _ in range(draw(st.integers(1, 3)))]
    text = "\n".join(json.dumps(r) for r in records).encode()
    return {"params.jsonl": draw(corrupted(text))}, {"id": draw(st.sampled_from([0, 0, 1, -1]))}


def read_params_case(folder: Path, args: dict) -> Any:
    from synthloop.jobs.replay import read_scene_params

    return read_scene_params(folder, args["id"])


# -------------------------------------------------------------------------------- checkpoints


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@st.composite
def checkpoint_cases(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    import pickle

    import torch

    base = {"version": 1, "model": {"w": [1.0, 2.0]}, "step": 3, "history": [{"loss": 0.5}], "rng": [1, 2, 3]}
    doc = draw(mutated(base, max_mutations=draw(st.sampled_from([0, 1, 3]))))
    tensors = draw(st.booleans())
    if isinstance(doc, dict) and tensors and isinstance(doc.get("model"), dict):
        doc["model"] = {k: torch.tensor(v) if isinstance(v, list) and all(isinstance(x, float) for x in v) else v for k, v in doc["model"].items()}
    how = draw(st.sampled_from(["torch"] * 6 + ["payload", "pickle", "legacy"]))
    buf = io.BytesIO()
    if how == "payload":
        torch.save({"version": 1, "x": _Payload()}, buf)
    elif how == "pickle":
        pickle.dump(doc, buf)
    else:
        torch.save(doc, buf, _use_new_zipfile_serialization=how != "legacy")
    return {"checkpoint.pt": draw(corrupted(buf.getvalue()))}, {}


def read_checkpoint_case(folder: Path, args: dict) -> Any:
    from synthloop.loops.checkpoint import load_checkpoint

    return load_checkpoint(folder / "checkpoint.pt")


TARGETS = {
    t.name: t
    for t in (
        Target("coco", coco_cases(), read_coco_case),
        Target("yolo", yolo_cases(), read_yolo_case),
        Target("voc", voc_cases(), read_voc_case),
        Target("config", config_cases(), read_config_case),
        Target("params", params_cases(), read_params_case),
        Target("checkpoint", checkpoint_cases(), read_checkpoint_case),
    )
}


def classify(exc: BaseException | None, folder: Path) -> str:
    """``ok``, ``clear``, ``unclear`` or ``crash`` (see the module docstring)."""
    if exc is None:
        return "ok"
    if not isinstance(exc, InputError):
        return "crash"
    return "clear" if str(folder) in str(exc) else "unclear"


def run_case(target: Target, case: tuple[dict[str, bytes], dict]) -> tuple[str, BaseException | None]:
    """Write ``case`` into a fresh folder, run the reader, classify what happened."""
    files, args = case
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        folder = Path(tmp)
        _write(folder, files)
        try:
            target.read(folder, args)
        except Exception as exc:  # noqa: BLE001 - the point: sort every exception
            return classify(exc, folder), exc
        return "ok", None
