"""Untrusted files: no pickled code from checkpoints, only ``yaml.safe_load``, annotation file names
that cannot leave the image root (``..``, absolute paths, symbolic links), decompression bombs
refused before decoding."""

import ast
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from synthloop.data.coco import read_coco
from synthloop.data.images import encode_png, load_image
from synthloop.data.voc import read_voc
from synthloop.data.yolo import read_yolo
from synthloop.errors import InputError
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "synthloop"


def _calls(attr: str):
    """``(file, line, call)`` of every call ``<something>.<attr>(...)`` in synthloop/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield path.relative_to(PACKAGE.parent), node.lineno, node


def test_every_torch_load_is_weights_only():
    found = [(f, n, call) for f, n, call in _calls("load") if isinstance(call.func.value, ast.Name) and call.func.value.id == "torch"]
    assert found, "expected torch.load calls in synthloop/"
    bad = [
        f"{f}:{n}"
        for f, n, call in found
        if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)
    ]
    assert not bad, f"torch.load without weights_only=True: {bad}"
    from_imports = [
        f
        for f in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(f.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names)
    ]
    assert not from_imports, f"'from torch import load' hides a torch.load from this check: {from_imports}"


def test_only_yaml_safe_load():
    unsafe = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
    bad = [f"{f}:{n}" for attr in unsafe for f, n, call in _calls(attr) if isinstance(call.func.value, ast.Name) and call.func.value.id == "yaml"]
    assert not bad, f"unsafe YAML loaders: {bad}"
    loaders = [f"{f}" for f in PACKAGE.rglob("*.py") if any(w in f.read_text() for w in ("yaml.Loader", "UnsafeLoader", "FullLoader", "from yaml import load"))]
    assert not loaders, f"unsafe YAML loaders: {loaders}"


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: code execution from a data file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"version": 1, "model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, bad)
    with pytest.raises(InputError, match="cannot read checkpoint") as ei:
        load_checkpoint(bad)
    assert ei.value.file == str(bad) and not marker.exists()
    good = save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(2)}, "step": 3})
    assert load_checkpoint(good)["step"] == 3


# ------------------------------------------------------------------- file names and the image root


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    return path


def _coco(root, file_name):
    doc = {"images": [{"id": 1, "file_name": file_name, "width": 8, "height": 8}], "categories": [{"id": 1, "name": "a"}], "annotations": []}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root / "annotations.json"


def _yolo(root, image_rel="images/x.png"):
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("train: images\nnames: [a]\n")
    return root


def _voc(root, file_name):
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    xml = f"<annotation><filename>{file_name}</filename><size><width>8</width><height>8</height><depth>3</depth></size></annotation>"
    (root / "Annotations" / "x.xml").write_text(xml)
    return root


@pytest.mark.parametrize("name", ["../outside.png", "a/../../outside.png", "/etc/passwd", "..\\outside.png", "C:\\outside.png"])
def test_coco_and_voc_names_cannot_escape(tmp_path, name):
    root = tmp_path / "ds"
    root.mkdir()
    with pytest.raises(InputError, match="escapes|absolute") as ei:
        read_coco(_coco(root, name), root)
    assert ei.value.field == "images[0].file_name"
    if ".." in name:  # VOC names are joined under JPEGImages/: "/etc/passwd" stays inside it
        with pytest.raises(InputError, match="escapes") as ei:
            read_voc(_voc(root, name.replace("..", "../..", 1)))
        assert ei.value.field == "annotation/filename"


def test_yolo_split_lists_cannot_escape(tmp_path):
    root = _yolo(tmp_path / "ds")
    _png(root / "images" / "x.png")
    for line, pattern in (("../outside/images/x.png", "escapes"), ("/etc/images/passwd", "absolute")):
        (root / "list.txt").write_text(line + "\n")
        (root / "data.yaml").write_text("train: list.txt\nnames: [a]\n")
        with pytest.raises(InputError, match=pattern) as ei:
            read_yolo(root)
        assert ei.value.file == str(root / "list.txt") and ei.value.field == "line 1"


def test_symlinks_out_of_the_root_are_refused(tmp_path):
    secret = _png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "images" / "x.png").symlink_to(secret)
    (root / "JPEGImages" / "x.png").symlink_to(secret)
    (root / "linked").symlink_to(secret.parent, target_is_directory=True)
    for name in ("images/x.png", "linked/secret.png"):
        with pytest.raises(InputError, match="symbolic link") as ei:
            read_coco(_coco(root, name), root)
        assert ei.value.field == "images[0].file_name"
    with pytest.raises(InputError, match="symbolic link") as ei:
        read_voc(_voc(root, "x.png"))
    assert ei.value.field == "annotation/filename"
    with pytest.raises(InputError, match="symbolic link") as ei:
        read_yolo(_yolo(root))
    assert ei.value.file == str(root / "data.yaml") and ei.value.field == "train"
    # a link that stays inside the root is fine
    for link in ("images/x.png", "JPEGImages/x.png"):
        (root / link).unlink()
        (root / link).symlink_to(_png(root / "real" / "x.png"))
    assert read_coco(_coco(root, "images/x.png"), root, check_images=True).images[0].width == 8
    assert len(read_yolo(root).images) == 1
    assert read_voc(_voc(root, "x.png")).images[0].file_name == "JPEGImages/x.png"


def _png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_by_the_readers(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "images" / "x.png").write_bytes(_png_claiming(60_000, 60_000))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="too large|over the limit") as ei:
        load_image(root / "images" / "x.png")
    assert ei.value.field == "size"
    with pytest.raises(InputError, match="too large|over the limit"):
        read_yolo(_yolo(root))
    doc = json.loads(_coco(root, "images/x.png").read_text())
    doc["images"][0].update(width=60_000, height=60_000)
    (root / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="too large|over the limit"):
        read_coco(root / "annotations.json", root, check_images=True)
    assert time.perf_counter() - t0 < 3.0  # refused from the header, never decoded
