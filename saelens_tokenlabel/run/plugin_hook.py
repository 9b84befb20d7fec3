"""Install the SAELens plugin (`plugin.install`) without importing SAELens.

``import saelens_tokenlabel`` must give every SAELens `SAE` class `label_features`, yet stay
light (SAELens pulls in torch and TransformerLens, seconds of import). So: when
``sae_lens.saes.sae`` (the module defining `SAE`) is already imported, install now; else put
a finder on `sys.meta_path` that, when that module is imported, wraps its loader so that
`install()` runs right after the module's code. The finder removes itself on first use;
installing twice is a no-op (`install` is idempotent).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from . import plugin

SAE_MODULE = "sae_lens.saes.sae"
"""The SAELens module that defines `SAE`; the plugin is installed once it has run."""


def install_now_or_on_import() -> None:
    """`plugin.install()` now if SAELens's `SAE` is loaded, else as soon as it is; and
    `LabelSet.compare` now (it needs no SAELens to be attached)."""
    plugin.install_labelset_methods()
    module = sys.modules.get(SAE_MODULE)
    if module is not None and hasattr(module, "SAE"):
        plugin.install()
        return
    if not any(isinstance(f, _SAEFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SAEFinder())


def _remove_finders() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SAEFinder)]


class _SAEFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the finders after it for ``sae_lens.saes.sae`` and wraps
    the loader of what they find."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != SAE_MODULE:
            return None
        later = sys.meta_path[sys.meta_path.index(self) + 1:] if self in sys.meta_path else []
        for finder in later:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _InstallingLoader(spec.loader)
        return spec


class _InstallingLoader(importlib.abc.Loader):
    """The real loader, then `plugin.install()`; the module keeps the real loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        _remove_finders()
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            plugin.install()
        except Exception as err:  # noqa: BLE001
            # Failing here would fail `import sae_lens` itself; say why the plugin is missing.
            warnings.warn(f"saelens_tokenlabel: SAE.label_features not installed: {err}",
                          RuntimeWarning, stacklevel=2)
