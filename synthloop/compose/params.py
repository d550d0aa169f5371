"""Parameter dataclasses of a composite scene.

A sampler draws a :class:`SceneParams` from an explicit ``torch.Generator``; ``render_scene``
turns it into pixels deterministically. Params are plain JSON (``to_dict``/``from_dict``), are
written next to every generated image, and replaying them re-renders the image bit-identically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BlendSpec:
    """A blend mode and its options (``sigma``, ``kernel_size``, ``angle``, ``levels``...)."""

    mode: str = "alpha"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectParams:
    """One pasted cut-out.

    ``affine`` is (angle, tx, ty, shear, sx, sy) mapping the cut-out onto the scene canvas (see
    :mod:`synthloop.functional.geometry`); ``photometric`` is (brightness, contrast, saturation, hue).
    Objects are drawn in list order (later = on top); distractors are pasted but never labelled.
    """

    instance: int
    category_id: int
    affine: list[float]
    photometric: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.0])
    blend: BlendSpec = field(default_factory=BlendSpec)
    distractor: bool = False
    cleanup: bool = False  # TERSE A.2 mask clean-up after warping


@dataclass
class ArtefactParams:
    """TERSE §3.1 blending artefact: a region of *another* background, cut in the shape of
    instance ``instance``'s mask, pasted into this background with the given blend."""

    instance: int
    affine: list[float]
    blend: BlendSpec = field(default_factory=BlendSpec)


@dataclass
class SceneParams:
    canvas: tuple[int, int]  # (H, W)
    background: dict[str, Any]  # a background source's own params (replayable)
    objects: list[ObjectParams] = field(default_factory=list)
    artefacts: list[ArtefactParams] = field(default_factory=list)
    artefact_background: dict[str, Any] | None = None  # where artefact pixels come from
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["canvas"] = list(self.canvas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SceneParams":
        def blend(b: dict[str, Any] | None) -> BlendSpec:
            return BlendSpec(**(b or {}))

        return cls(
            canvas=(int(d["canvas"][0]), int(d["canvas"][1])),
            background=dict(d["background"]),
            objects=[ObjectParams(**{**o, "blend": blend(o.get("blend"))}) for o in d.get("objects", [])],
            artefacts=[ArtefactParams(**{**a, "blend": blend(a.get("blend"))}) for a in d.get("artefacts", [])],
            artefact_background=d.get("artefact_background"),
            seed=d.get("seed"),
        )

    def with_blend(self, spec: BlendSpec) -> "SceneParams":
        """The same layout with every object and artefact blended by ``spec`` (CPL's
        "same layout once per blend mode")."""
        d = self.to_dict()
        for o in d["objects"]:
            o["blend"] = asdict(spec)
        for a in d["artefacts"]:
            a["blend"] = asdict(spec)
        return SceneParams.from_dict(d)
