"""Lazy package attributes (PEP 562): a package lists its public names and the module each
comes from; a name's module is imported on first access, so importing the package is cheap
(no torch, TransformerLens or SAELens until something that needs them is used).

Layer 1: imports nothing from the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `exports` maps each public name to the
    relative module that defines it (e.g. ``{"LabelConfig": ".config"}``); `submodules` are
    subpackages reachable as attributes (``stl.sae``). A name is imported once, then kept in
    the package's namespace like an eager import."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | subs)

    return __getattr__, __dir__
