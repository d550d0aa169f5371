"""The one parameter schema of a composite scene, for paste scenes and TERSE scenes alike.

A sampler draws a :class:`SceneParams` from an explicit ``torch.Generator`` and a deterministic
compositor turns it into pixels: :func:`~synthloop.compose.apply.apply_scene` (NumPy/OpenCV, the
paste generator) when ``frame`` is ``None``, :func:`~synthloop.compose.scene_batch.composite_batch`
(batched torch, differentiable in the placements: the TERSE loops) when ``frame`` says how cut-outs
are framed for the spatial transformer. Params are plain JSON (``to_dict``/``from_dict``), are
written next to every generated image, and replaying them re-renders the image bit-identically.

Versions: 2 (this one) added ``version``, ``frame``, ``min_visibility``, ``meta`` and
``ObjectParams.anchor``, and took TERSE scenes in; version-1 paste params (no ``version`` key)
read unchanged, and version-1 TERSE scene dicts (``"fg_size"`` ...) are converted on reading.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from synthloop.errors import InputError

SCENE_PARAMS_VERSION = 2
_OPTIONAL = frozenset({"frame", "min_visibility", "anchor"})
"""Fields left out of the JSON when ``None`` (and ``meta`` when empty), so paste params stay lean."""


@dataclass
class BlendSpec:
    """A blend mode and its options (``sigma``, ``kernel_size``, ``angle``, ``levels``...)."""

    mode: str = "alpha"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectParams:
    """One pasted cut-out.

    ``affine`` is (angle, tx, ty, shear, sx, sy) mapping the cut-out onto the scene canvas (see
    :mod:`synthloop.functional.geometry`; with a scene ``frame``, the spatial transformer's
    placement of the framed cut-out); ``photometric`` is (brightness, contrast, saturation, hue),
    ``None`` for no colour change at all. Objects are drawn in list order (later = on top);
    distractors are pasted but never labelled. ``anchor`` is the random ``[0, 1]^2`` point a TERSE
    synthesizer's translation is relative to (recorded, not needed to composite).
    """

    instance: int
    category_id: int
    affine: list[float]
    photometric: list[float] | None = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.0])
    blend: BlendSpec = field(default_factory=BlendSpec)
    distractor: bool = False
    cleanup: bool = False  # TERSE A.2 mask clean-up after warping
    anchor: list[float] | None = None


@dataclass
class ArtefactParams:
    """TERSE §3.1 blending artefact: a region of *another* background, cut in the shape of
    instance ``instance``'s mask, pasted into this background with the given blend."""

    instance: int
    affine: list[float]
    blend: BlendSpec = field(default_factory=BlendSpec)


@dataclass
class CutoutFrame:
    """How the batched torch compositor frames cut-outs (TERSE A.2): each is letterboxed to
    ``size`` x ``size`` with its longer side filling ``fill`` of it, and the A.2 mask clean-up
    (for objects with ``cleanup``) cuts the warped alpha at ``cleanup_mu`` and feathers it with a
    Gaussian of ``cleanup_sigma`` px."""

    size: int
    fill: float
    cleanup_sigma: float = 1.0
    cleanup_mu: float = 0.5


@dataclass
class SceneParams:
    """One composite: the canvas ``(H, W)``, a background source's own (replayable) params, the
    objects in paste order, TERSE background artefacts (pixels from ``artefact_background``), the
    seed it was sampled with; ``frame`` (torch compositor) and ``min_visibility`` (objects less
    visible are not labelled) when the scene carries them; ``meta``: provenance that does not
    change a pixel (e.g. a TERSE cycle, the target's confidence at generation)."""

    canvas: tuple[int, int]
    background: dict[str, Any]
    objects: list[ObjectParams] = field(default_factory=list)
    artefacts: list[ArtefactParams] = field(default_factory=list)
    artefact_background: dict[str, Any] | None = None
    seed: int | None = None
    version: int = SCENE_PARAMS_VERSION
    frame: CutoutFrame | None = None
    min_visibility: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (optional fields left out when unset)."""
        d = _drop_unset(asdict(self))
        d["canvas"] = list(self.canvas)
        d["objects"] = [_drop_unset(o) for o in d["objects"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneParams:
        """Read :meth:`to_dict`'s output, version-1 paste params, or a version-1 TERSE scene dict.

        Raises:
            InputError: params of a newer version, or missing/unknown fields.
        """
        if not isinstance(d, dict):
            raise InputError(f"scene params must be a JSON object, got {type(d).__name__}", field="params")
        version = d.get("version", 1)
        if type(version) is not int or version < 1:
            raise InputError(f"version must be a positive integer, got {version!r}", field="version")
        if version > SCENE_PARAMS_VERSION:
            raise InputError(f"scene params of version {version}; this synthloop reads versions 1-{SCENE_PARAMS_VERSION}", field="version")
        if "fg_size" in d:
            return check_scene_params(_from_terse_v1(d))

        def blend(b: dict[str, Any] | None) -> BlendSpec:
            return BlendSpec(**(b or {}))

        try:
            return check_scene_params(cls(
                canvas=(int(d["canvas"][0]), int(d["canvas"][1])),
                background=dict(d["background"]),
                objects=[ObjectParams(**{**o, "blend": blend(o.get("blend"))}) for o in d.get("objects", [])],
                artefacts=[ArtefactParams(**{**a, "blend": blend(a.get("blend"))}) for a in d.get("artefacts", [])],
                artefact_background=d.get("artefact_background"),
                seed=d.get("seed"),
                frame=CutoutFrame(**d["frame"]) if d.get("frame") is not None else None,
                min_visibility=d.get("min_visibility"),
                meta=dict(d.get("meta") or {}),
            ))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise InputError(f"malformed scene params ({type(e).__name__}: {e})", field="params") from None

    def with_blend(self, spec: BlendSpec) -> SceneParams:
        """The same layout with every object and artefact blended by ``spec`` (CPL's
        "same layout once per blend mode")."""
        d = self.to_dict()
        for o in d["objects"]:
            o["blend"] = asdict(spec)
        for a in d["artefacts"]:
            a["blend"] = asdict(spec)
        return SceneParams.from_dict(d)


def _numbers(v: Any, n: int | None, field: str) -> None:
    if not (isinstance(v, list | tuple) and (n is None or len(v) == n) and all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise InputError(f"must be a list of {n or 'some'} finite numbers, got {v!r}", field=field)


def _typed(v: Any, kind: type | tuple[type, ...], field: str, what: str) -> None:
    if not isinstance(v, kind) or (isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        raise InputError(f"must be {what}, got {v!r}", field=field)


def check_scene_params(p: SceneParams) -> SceneParams:
    """``p`` when every field has the type the compositors expect (read from an untrusted
    ``params.jsonl`` or scene file), else an :class:`InputError` naming the field."""
    if not (len(p.canvas) == 2 and all(0 < c <= 1 << 16 for c in p.canvas)):
        raise InputError(f"canvas must be [height, width] between 1 and 65536, got {list(p.canvas)}", field="params.canvas")
    _typed(p.background, dict, "params.background", "an object")
    _typed(p.artefact_background, (dict, type(None)), "params.artefact_background", "an object or null")
    _typed(p.seed, (numbers.Integral, type(None)), "params.seed", "an integer or null")
    _typed(p.meta, dict, "params.meta", "an object")
    if p.min_visibility is not None:
        _numbers([p.min_visibility], 1, "params.min_visibility")
    if p.frame is not None:
        _typed(p.frame.size, numbers.Integral, "params.frame.size", "an integer")
        _numbers([p.frame.fill, p.frame.cleanup_sigma, p.frame.cleanup_mu], 3, "params.frame")
        if not (p.frame.size > 0 and 0 < p.frame.fill <= 1):
            raise InputError(f"needs size > 0 and 0 < fill <= 1, got {p.frame}", field="params.frame")
    for kind, items in (("objects", p.objects), ("artefacts", p.artefacts)):
        for i, o in enumerate(items):
            where = f"params.{kind}[{i}]"
            _typed(o.instance, numbers.Integral, f"{where}.instance", "an integer")
            if o.instance < 0:
                raise InputError(f"must be >= 0, got {o.instance}", field=f"{where}.instance")
            _numbers(o.affine, 6, f"{where}.affine")
            _typed(o.blend.mode, str, f"{where}.blend.mode", "a string")
            _typed(o.blend.options, dict, f"{where}.blend.options", "an object")
            if isinstance(o, ObjectParams):
                _typed(o.category_id, numbers.Integral, f"{where}.category_id", "an integer")
                if o.photometric is not None:
                    _numbers(o.photometric, 4, f"{where}.photometric")
                if o.anchor is not None:
                    _numbers(o.anchor, 2, f"{where}.anchor")
                for flag in ("distractor", "cleanup"):
                    if not any(getattr(o, flag) is v or (type(getattr(o, flag)).__name__ == "bool_" and getattr(o, flag) == v) for v in (True, False)):
                        raise InputError(f"must be true or false, got {getattr(o, flag)!r}", field=f"{where}.{flag}")
    return p


def _drop_unset(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not ((k in _OPTIONAL and v is None) or (k == "meta" and not v))}


def json_fields(obj: Any) -> dict[str, Any]:
    """A params dataclass's fields for ``json.dumps(default=...)`` (no deep copy; optional fields
    left out when unset)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if (f.name in _OPTIONAL and v is None) or (f.name == "meta" and not v):
            continue
        out[f.name] = v
    return out


def _from_terse_v1(d: dict[str, Any]) -> SceneParams:
    """A version-1 TERSE scene dict (``fg_size``, ``fg_fill``, one ``blend`` and ``artefact`` per
    scene, objects by ``index``) as a :class:`SceneParams`."""
    try:
        mode = d["blend"]["mode"]
        objects = [
            ObjectParams(
                instance=int(o["index"]), category_id=int(o["category_id"]), affine=list(o["affine"]), photometric=o.get("photometric"),
                blend=BlendSpec(mode), cleanup=bool(d["cleanup"]), anchor=o.get("anchor"),
            )  # fmt: skip
            for o in d["objects"]
        ]
        art = d.get("artefact")
        return SceneParams(
            canvas=(int(d["canvas"][0]), int(d["canvas"][1])),
            background=dict(d["background"]),
            objects=objects,
            artefacts=[ArtefactParams(int(art["shape_index"]), list(art["affine"]), BlendSpec(mode))] if art else [],
            artefact_background=dict(art["background"]) if art else None,
            frame=CutoutFrame(int(d["fg_size"]), float(d["fg_fill"]), float(d["cleanup_sigma"]), float(d["cleanup_mu"])),
            min_visibility=float(d["min_visibility"]),
            meta={k: d[k] for k in ("cycle", "index", "confidence") if k in d},
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise InputError(f"malformed version-1 TERSE scene params ({type(e).__name__}: {e})", field="params") from None
