"""Configuration of a paste job (``synthloop paste CONFIG.yaml``).

Relative paths in a config file are relative to the folder of that file; the resolved config
written next to the output holds absolute paths, so a run folder can be replayed from anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from synthloop.compose.config import SceneConfig
from synthloop.config import Config, build_config, load_yaml, override_keys, threads_field
from synthloop.data.instances import InstanceBankConfig
from synthloop.errors import InputError

OUTPUT_FORMATS = ("coco", "yolo", "voc")
BACKGROUND_NAMES = ("builtin", "procedural", "photos", "noise", "gradient", "checkers", "perlin")  # not paths


class CocoSource(Config):
    """Cut-outs from the masks of a COCO dataset."""

    json_file: Path = Field(alias="json", description="COCO instances JSON")
    images: Path | None = Field(None, description="folder the file_name entries are relative to (default: the JSON's folder)")
    category_ids: list[int] | None = Field(None, description="only these categories")

    model_config = Config.model_config | {"populate_by_name": True}


class InstancesConfig(Config):
    """Where the cut-outs come from: one of ``builtin``, ``coco``, ``rgba_folder``, ``mask_pairs``
    (``builtin: mnist`` when none is given)."""

    builtin: Literal["mnist"] | None = None
    coco: CocoSource | None = None
    rgba_folder: Path | None = None
    mask_pairs: Path | None = None
    limit: int | None = Field(None, ge=1, description="use only the first N cut-outs")
    bank: InstanceBankConfig = Field(default_factory=InstanceBankConfig, description="clean-up options of file sources")

    @model_validator(mode="after")
    def _exactly_one(self) -> InstancesConfig:
        given = [k for k in ("builtin", "coco", "rgba_folder", "mask_pairs") if getattr(self, k) is not None]
        if not given:  # the default source
            object.__setattr__(self, "builtin", "mnist")
        elif len(given) > 1:
            raise ValueError(f"give only one instance source of builtin, coco, rgba_folder, mask_pairs (got {', '.join(given)})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("builtin", "coco", "rgba_folder", "mask_pairs") if getattr(self, k) is not None)


class BackgroundsConfig(Config):
    """Background sources (see :class:`~synthloop.data.backgrounds.BackgroundBank`).

    ``sources``: ``builtin`` (procedural textures + bundled photos), ``procedural``, ``photos``, a
    procedural kind (``noise``, ``gradient``, ``checkers``, ``perlin``) or a folder of images. A
    plain string or list in the YAML is taken as ``sources``. ``pool`` > 0 renders that many
    backgrounds once per worker and reuses them with random horizontal flips
    (:class:`~synthloop.compose.sources.PooledBackgrounds`), which is much faster for large runs.
    ``exclude`` names built-in photos that ``photos`` and ``builtin`` leave out (e.g.
    ``{sources: [photos], exclude: [coins]}`` when pasting coins: scikit-image's coins photo would
    put unlabelled coins into the backgrounds); see :data:`~synthloop.data.backgrounds.BUILTIN_PHOTO_NAMES`.
    """

    sources: list[str] = Field(default_factory=lambda: ["builtin"])
    exclude: list[str] = Field(default_factory=list, description="built-in photos to leave out of photos / builtin, e.g. [coins]")
    weights: list[float] | None = None
    scale: tuple[float, float] = (0.1, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    pool: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, (str, Path)):
            return {"sources": [str(data)]}
        if isinstance(data, list):
            return {"sources": data}
        return data

    @field_validator("sources")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one background source is needed")
        return v

    @field_validator("exclude")
    @classmethod
    def _known_photos(cls, v: list[str]) -> list[str]:
        from synthloop.data.backgrounds import check_photo_names

        try:
            check_photo_names(v)
        except InputError as e:  # a custom error type: the message without pydantic's "Value error, "
            raise PydanticCustomError("unknown_photo", e.message) from None
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _exclude_needs_photos(self) -> BackgroundsConfig:
        if self.exclude and not set(self.sources) & {"photos", "builtin"}:
            raise ValueError("exclude names built-in photos, but no source is photos or builtin")
        return self


class PasteConfig(Config):
    """A paste job: ``num_images`` scenes sampled from ``scene``, written in ``formats``.

    With ``scene.blend.all_modes`` each scene layout is written once per mode of
    ``scene.blend.modes`` (Cut-Paste-Learn), so the job writes ``num_images * len(modes)`` images.
    """

    num_images: int = Field(100, ge=1)
    seed: int = 0
    scene: SceneConfig = Field(default_factory=SceneConfig)
    instances: InstancesConfig = Field(default_factory=InstancesConfig)
    backgrounds: BackgroundsConfig = Field(default_factory=BackgroundsConfig)
    formats: list[Literal["coco", "yolo", "voc"]] = Field(default_factory=lambda: ["coco"])
    mask_format: Literal["rle", "polygon"] = "rle"
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    chunk_size: int = Field(16, ge=1, description="scenes per work unit handed to a worker")
    threads: int | None = threads_field()

    @model_validator(mode="after")
    def _psis_needs_coco(self) -> PasteConfig:
        if self.scene.placement.strategy == "psis" and self.instances.coco is None:
            raise ValueError("instance switching (scene.placement.strategy: psis) needs a segmented COCO dataset as instances.coco")
        return self

    def check_paths(self) -> None:
        """Raise :class:`InputError` for instance or background files and folders that do not
        exist (before a job writes anything); then warn about background sources that are also
        foreground sources (:func:`~synthloop.jobs.paste_assets.background_overlap`)."""
        inst = self.instances
        needed = [("instances.coco.json", inst.coco.json_file if inst.coco else None), ("instances.coco.images", inst.coco.images if inst.coco else None),
                  ("instances.rgba_folder", inst.rgba_folder), ("instances.mask_pairs", inst.mask_pairs)]  # fmt: skip
        needed += [("backgrounds.sources", Path(s)) for s in self.backgrounds.sources if s not in BACKGROUND_NAMES]
        for field, path in needed:
            if path is not None and not Path(path).exists():
                raise InputError("no such file or folder", file=path, field=field)
        if self.scene.placement.strategy != "psis":  # psis takes its backgrounds from the COCO scenes themselves
            from synthloop.jobs.paste_assets import paste_foregrounds, warn_background_overlap

            warn_background_overlap(self.backgrounds, paste_foregrounds(self.instances))

    @field_validator("formats")
    @classmethod
    def _coco_first(cls, v: list[str]) -> list[str]:
        if "coco" not in v:
            raise ValueError("coco must be among the formats (annotations.json is what replay, vis and resume read)")
        return list(dict.fromkeys(v))


def absolute_to(base: Path) -> Callable[[Any], Any]:
    """``absolute(p)``: a non-empty string path made absolute against ``base`` (``~`` expanded); anything else as is."""

    def absolute(p: Any) -> Any:
        return str((base / Path(p).expanduser()).resolve()) if isinstance(p, str) and p else p

    return absolute


def resolve_backgrounds(data: dict[str, Any], absolute: Callable[[Any], Any]) -> dict[str, Any]:
    """``data`` with its ``backgrounds`` shorthand expanded and folder sources made absolute."""
    bgs = data.get("backgrounds")
    if bgs is not None:
        bgs = BackgroundsConfig._shorthand(bgs)
        if isinstance(bgs, dict) and isinstance(bgs.get("sources"), list):
            bgs = dict(bgs, sources=[s if not isinstance(s, str) or s in BACKGROUND_NAMES else absolute(s) for s in bgs["sources"]])
        data["backgrounds"] = bgs
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the file paths of a raw config mapping absolute, relative to ``base``."""
    absolute = absolute_to(base)
    data = dict(data)
    inst = data.get("instances")
    if isinstance(inst, dict):
        inst = dict(inst)
        for key in ("rgba_folder", "mask_pairs"):
            if key in inst:
                inst[key] = absolute(inst[key])
        if isinstance(inst.get("coco"), dict):
            coco = dict(inst["coco"])
            for key in ("json", "json_file", "images"):
                if key in coco:
                    coco[key] = absolute(coco[key])
            inst["coco"] = coco
        data["instances"] = inst
    return resolve_backgrounds(data, absolute)


def load_paste_config(path: str | Path | None, overrides: list[str] | None = None) -> PasteConfig:
    """Load a paste config file (or the defaults), apply ``key=value`` overrides, resolve paths."""
    from synthloop.config import apply_overrides

    if path is None:
        data: dict[str, Any] = {}
        base, source = Path.cwd(), "<defaults>"
    else:
        data = load_yaml(path)
        base, source = Path(path).resolve().parent, str(path)
    merged = apply_overrides(data, overrides)
    return build_config(PasteConfig, _resolve_paths(merged, base), source=source, overridden=override_keys(overrides))


def resolved_dict(cfg: PasteConfig) -> dict[str, Any]:
    """The config as plain data, with aliases (``instances.coco.json``) as written in files.

    Without ``threads``: it does not change the output, so a resumed run may use another value
    (``run.json`` records the threads each run used)."""
    return cfg.model_dump(mode="json", by_alias=True, exclude={"threads"})
