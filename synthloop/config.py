"""Configuration: pydantic models validated on load, YAML files, ``a.b=value`` overrides.

Every component defines its own :class:`Config` subclass (``extra="forbid"``), so a typo is an
error that names the file, the key and the keys that are valid there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from synthloop.errors import ConfigError
from synthloop.utils.text import read_text

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every config model: unknown keys are errors; values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc[:-1]`` inside ``model`` (best effort through nested models)."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        # unwrap Optional[...] / list[...] to the first BaseModel argument
        cands = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return []
        cur = nxt
    return sorted(getattr(cur, "model_fields", {}).keys())


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str, overridden: Iterable[str] = ()) -> str:
    """One line per error: ``SOURCE: field KEY: what``; SOURCE is ``<command line>`` for a key a
    ``key=value`` override set (or one inside / above it), else ``source`` (the file)."""
    overridden = list(overridden)
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "<root>"
        origin = "<command line>" if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden) else source
        if e.get("type") == "extra_forbidden":
            valid = _valid_keys(model, loc)
            lines.append(f"{origin}: field {key}: unknown key; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"{origin}: field {key}: {e.get('msg')} (got {e.get('input')!r})")
    return "\n".join(lines)


def override_keys(overrides: Iterable[str] | None) -> list[str]:
    """The dotted keys that ``key=value`` overrides set."""
    return [".".join(parse_override(o)[0]) for o in overrides or []]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3). The value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value", file="<command line>")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key", file="<command line>")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    data = dict(data)
    for item in overrides or []:
        path, value = parse_override(item)
        cur = data
        for p in path[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else nxt
                if not isinstance(nxt, dict):
                    raise ConfigError(f"cannot set {'.'.join(path)}: {p} is not a mapping", file="<command line>", field=".".join(path))
                cur[p] = nxt
            else:
                nxt = dict(nxt)
                cur[p] = nxt
            cur = nxt
        cur[path[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", file=path)
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=path) from None
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", file=path)
    return data


def build_config(
    model: type[C], data: dict[str, Any] | None = None, overrides: list[str] | None = None, source: str = "<config>", overridden: Iterable[str] = ()
) -> C:
    """Validate ``data`` with ``overrides`` applied; errors name ``source`` or, for keys set by an
    override (``overrides``, or ``overridden`` when they were applied before), the command line."""
    merged = apply_overrides(data or {}, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source, [*override_keys(overrides), *overridden])) from None


def load_config(model: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Load ``path`` (YAML) into ``model``, apply ``key=value`` overrides, validate."""
    data = load_yaml(path) if path is not None else {}
    return build_config(model, data, overrides, source=str(path) if path else "<defaults>")


def check_range(value: tuple[float, float]) -> tuple[float, float]:
    """Validator body for a ``(min, max)`` config field: both finite and ``min <= max``."""
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"range has min {lo} > max {hi}")
    return value


def _ordered(v, name: str):
    if v is not None and v[0] > v[1]:
        raise ValueError(f"{name}: min {v[0]} is greater than max {v[1]}")
    return v


class RangeChecked(Config):
    """Checks every ``(min, max)`` pair field; sizes listed in ``_not_ranges`` are exempt."""

    _not_ranges: tuple[str, ...] = ("canvas",)

    @model_validator(mode="after")
    def _check_ranges(self):
        for name, value in self:
            if name in self._not_ranges:
                continue
            if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
                _ordered(value, name)
        return self


def image_size_type(min_side: int) -> Any:
    """The type of an ``(H, W)`` config field: a single int means a square, each side at least ``min_side``."""

    def square(v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v

    def large_enough(v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < min_side:
            raise ValueError(f"must be at least {min_side} x {min_side}, got {list(v)}")
        return v

    return Annotated[tuple[int, int], BeforeValidator(square), AfterValidator(large_enough)]


def threads_field() -> Any:
    """The ``threads`` key of every job config a training / generation command reads: torch
    threads per process, ``None`` (``null``) for the automatic default; ``--threads`` overrides it."""
    return Field(
        None,
        ge=1,
        description="torch threads per process (null: the CPUs this process may use / worker processes, 1 on a busy machine); --threads overrides it",
    )
