"""Lazy package exports (PEP 562), so that importing a package does not import torch.

The paste workers import ``synthloop.compose.apply`` and ``synthloop.functional.blend`` only; the
packages' torch-backed exports (batched paste, filters, geometry) load on first attribute access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map a name to its submodule.

    A resolved name is cached in ``namespace`` (the package's ``globals()``), so later lookups are
    plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
