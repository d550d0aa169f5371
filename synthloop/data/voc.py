"""Pascal VOC detection datasets: ``JPEGImages/``, ``Annotations/*.xml``, ``ImageSets/Main/<split>.txt``.

The XML is the standard VOC layout (``annotation/folder, filename, source, size/width, height,
depth, segmented, object/name, pose, truncated, difficult, bndbox/xmin, ymin, xmax, ymax``) with
VOC's 1-based, inclusive pixel coordinates: a COCO box ``(x, y, w, h)`` is written as
``xmin = x + 1, ymin = y + 1, xmax = x + w, ymax = y + h`` (rounded to whole pixels) and read back
as ``x = xmin - 1, w = xmax - xmin + 1``.

What does not survive a COCO -> VOC -> COCO round trip:

- masks (VOC detection XML has boxes only; ``segmented`` is written as 0) and ``iscrowd``;
- category ids and supercategories (VOC names objects; reading numbers the names 1..N in sorted
  order unless ``categories`` is given) and categories without any object;
- sub-pixel box coordinates (VOC boxes are whole pixels);
- pixels of non-JPEG images: ``JPEGImages/`` holds JPEG files named ``<id>.jpg`` (VOC loaders
  such as torchvision's build that path), so other formats are re-encoded (quality 95, alpha
  dropped); JPEG files are copied byte for byte;
- file names (an image's id is its file name without extension, folders joined with ``_``),
  image ids and per-object/per-image attributes other than ``pose``, ``truncated``,
  ``difficult`` and ``split``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from synthloop.data._io import copy_file, staged_dir
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_jpeg, load_image, safe_join
from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_bytes, atomic_write_text
from synthloop.utils.text import read_text

JPEG_QUALITY = 95
SPLITS = ("train", "val", "test")


def _voc_ids(images: list[ImageEntry]) -> list[str]:
    """Unique VOC ids from file names: ``a/b/x.png`` -> ``a_b_x`` (``_2``, ``_3``... on clashes)."""
    ids, seen = [], set()
    for im in images:
        p = PurePosixPath(im.file_name.replace("\\", "/"))
        parts = [q for q in p.parent.parts if q not in (".", "JPEGImages", "images")]
        base = "_".join([*parts, p.stem]) or f"image_{im.id}"
        cand, k = base, 1
        while cand in seen:
            k += 1
            cand = f"{base}_{k}"
        seen.add(cand)
        ids.append(cand)
    return ids


def _sub(parent: ET.Element, tag: str, text: str | int) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(text)
    return el


def _flag(attrs: dict, key: str, fallback: str | None = None) -> int:
    if key in attrs:
        return int(bool(attrs[key]))
    if fallback is not None and fallback in attrs:
        try:
            return int(float(attrs[fallback]) > 0)
        except (TypeError, ValueError):
            return 0
    return 0


def voc_xml(entry: ImageEntry, voc_id: str, names: dict[int, str], *, folder: str = "VOC") -> str:
    """The VOC annotation XML of one image (boxes only, 1-based inclusive pixel coordinates)."""
    root = ET.Element("annotation")
    _sub(root, "folder", folder)
    _sub(root, "filename", f"{voc_id}.jpg")
    src = ET.SubElement(root, "source")
    _sub(src, "database", "synthloop")
    size = ET.SubElement(root, "size")
    _sub(size, "width", int(entry.width))
    _sub(size, "height", int(entry.height))
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for ann in entry.annotations:
        x, y, w, h = (float(v) for v in ann.bbox)
        xmin = min(max(int(round(x)), 0), entry.width - 1) + 1
        ymin = min(max(int(round(y)), 0), entry.height - 1) + 1
        xmax = min(max(int(round(x + w)), xmin), entry.width)
        ymax = min(max(int(round(y + h)), ymin), entry.height)
        obj = ET.SubElement(root, "object")
        _sub(obj, "name", names[ann.category_id])
        _sub(obj, "pose", str(ann.attributes.get("pose", "Unspecified")))
        _sub(obj, "truncated", _flag(ann.attributes, "truncated", "truncation"))
        _sub(obj, "difficult", _flag(ann.attributes, "difficult"))
        box = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            _sub(box, tag, v)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(dataset: Dataset, out_dir: str | Path, *, default_split: str = "train") -> Path:
    """Write ``dataset`` as a VOC detection dataset; returns ``out_dir``.

    Images go to the split in their ``attributes["split"]`` (``train``/``val``/``test``), else to
    ``default_split``; ``trainval.txt`` lists train and val together, as VOC does. Everything is
    validated before anything is written, and the output appears all at once.
    """
    out_dir = Path(out_dir)
    names = {c.id: c.name for c in dataset.categories}
    ids = _voc_ids(dataset.images)
    xmls: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    for i, (im, vid) in enumerate(zip(dataset.images, ids, strict=True)):
        for j, ann in enumerate(im.annotations):
            if ann.category_id not in names:
                raise InputError(f"category_id {ann.category_id} is not the id of any category", file=out_dir / "Annotations" / f"{vid}.xml", field=f"images[{i}].annotations[{j}].category_id")
        split = str(im.attributes.get("split", default_split))
        if split not in SPLITS:
            raise InputError(f"split {split!r} is not one of {SPLITS}", file=out_dir, field=f"images[{i}].attributes.split")
        xmls[vid] = voc_xml(im, vid, names)
        splits.setdefault(split, []).append(vid)
    if "train" in splits or "val" in splits:
        splits["trainval"] = splits.get("train", []) + splits.get("val", [])

    with staged_dir(out_dir) as stage:
        for i, (im, vid) in enumerate(zip(dataset.images, ids, strict=True)):
            src = safe_join(dataset.root, im.file_name, field=f"images[{i}].file_name")
            dst = stage / "JPEGImages" / f"{vid}.jpg"
            if src.suffix.lower() in (".jpg", ".jpeg"):
                copy_file(src, dst, field=f"images[{i}].file_name")
            else:
                atomic_write_bytes(dst, encode_jpeg(load_image(src, mode="RGB"), JPEG_QUALITY))
            atomic_write_text(stage / "Annotations" / f"{vid}.xml", xmls[vid])
        for split, members in splits.items():
            atomic_write_text(stage / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{m}\n" for m in members))
    return out_dir


def _text(el: ET.Element, path: str, file: Path, where: str) -> str:
    node = el.find(path)
    if node is None or node.text is None or not node.text.strip():
        raise InputError(f"missing required element <{path.split('/')[-1]}>", file=file, field=f"{where}/{path}")
    return node.text.strip()


def _number(el: ET.Element, path: str, file: Path, where: str) -> float:
    raw = _text(el, path, file, where)
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"must be a number, got {raw!r}", file=file, field=f"{where}/{path}") from None


def _read_xml(path: Path) -> tuple[str, int, int, list[tuple[str, tuple[float, float, float, float], dict]]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(f"invalid XML: {e}", file=path) from None
    if root.tag != "annotation":
        raise InputError(f"root element must be <annotation>, got <{root.tag}>", file=path)
    filename = _text(root, "filename", path, "annotation")
    width = _number(root, "size/width", path, "annotation")
    height = _number(root, "size/height", path, "annotation")
    if width <= 0 or height <= 0 or not width.is_integer() or not height.is_integer():
        raise InputError(f"image size must be positive whole numbers, got {width} x {height}", file=path, field="annotation/size")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"annotation/object[{k}]"
        name = _text(obj, "name", path, where)
        xmin, ymin, xmax, ymax = (_number(obj, f"bndbox/{t}", path, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (0 <= xmin <= xmax <= width + 1 and 0 <= ymin <= ymax <= height + 1):
            raise InputError(f"box ({xmin}, {ymin}, {xmax}, {ymax}) is not inside the {int(width)}x{int(height)} image", file=path, field=f"{where}/bndbox")
        # tolerated off-by-ones of 0-based exporters (e.g. LabelImg): a minimum of 0, a maximum of size + 1
        xmin, ymin = max(xmin, 1.0), max(ymin, 1.0)
        xmax, ymax = max(xmax, xmin), max(ymax, ymin)
        attrs: dict = {}
        for tag in ("pose", "truncated", "difficult"):
            node = obj.find(tag)
            if node is not None and node.text is not None and node.text.strip():
                v = node.text.strip()
                attrs[tag] = int(v) if tag != "pose" and v.lstrip("-").isdigit() else v
        bbox = (xmin - 1, ymin - 1, min(xmax - xmin + 1, width - xmin + 1), min(ymax - ymin + 1, height - ymin + 1))
        objects.append((name, bbox, attrs))
    return filename, int(width), int(height), objects


def read_voc(src: str | Path, *, categories: list[str] | None = None, split: str | None = None) -> Dataset:
    """Read a VOC detection dataset from its folder (the one holding ``Annotations/``).

    Images are the ids listed in ``ImageSets/Main/<split>.txt`` (all split files when ``split`` is
    ``None``; per-class files such as ``dog_train.txt`` are ignored), or every ``Annotations/*.xml``
    when there are no split files. Each image gets ``attributes["split"]`` (``train``, ``val`` or
    ``test`` when listed there). Category ids are 1..N over ``categories`` (default: the object
    names found, sorted); an object with a name outside ``categories`` is an error.
    """
    src = Path(src)
    ann_dir = src / "Annotations"
    if not ann_dir.is_dir():
        raise InputError("not a VOC dataset: no Annotations/ folder", file=src)
    sets_dir = src / "ImageSets" / "Main"
    set_files = sorted(p for p in sets_dir.glob("*.txt") if "_" not in p.stem) if sets_dir.is_dir() else []
    if split is not None:
        set_files = [p for p in set_files if p.stem == split]
        if not set_files:
            raise InputError(f"no split file {split}.txt", file=sets_dir, field="split")
    membership: dict[str, list[str]] = {}
    if set_files:
        for f in set_files:
            for n, line in enumerate(read_text(f).split("\n"), 1):
                vid = line.strip().split(" ")[0] if line.strip() else ""
                if not vid:
                    continue
                safe_join(ann_dir, f"{vid}.xml", file=f, field=f"line {n}")
                membership.setdefault(vid, []).append(f.stem)
    else:
        membership = {p.stem: [] for p in sorted(ann_dir.glob("*.xml"))}

    parsed = []
    for vid in membership:
        xml_path = ann_dir / f"{vid}.xml"
        if not xml_path.is_file():
            raise InputError("annotation file listed in ImageSets not found", file=xml_path)
        parsed.append((vid, xml_path, *_read_xml(xml_path)))
    found_names = sorted({name for *_, objects in parsed for name, _, _ in objects})
    names = list(categories) if categories is not None else found_names
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images = []
    for i, (vid, xml_path, filename, width, height, objects) in enumerate(parsed, 1):
        anns = []
        for k, (name, bbox, attrs) in enumerate(objects):
            if name not in cat_id:
                raise InputError(f"object name {name!r} is not one of the categories {names}", file=xml_path, field=f"annotation/object[{k}]/name")
            anns.append(Annotation(cat_id[name], bbox, attributes=attrs))
        file_name = f"JPEGImages/{filename}"
        safe_join(src, file_name, file=xml_path, field="annotation/filename")
        sp = next((s for s in SPLITS if s in membership[vid]), membership[vid][0] if membership[vid] else None)
        images.append(ImageEntry(i, file_name, width, height, anns, {"split": sp} if sp else {}))
    return Dataset(root=src, categories=[Category(i + 1, n) for i, n in enumerate(names)], images=images, info={})
