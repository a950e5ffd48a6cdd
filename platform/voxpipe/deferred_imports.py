"""Modules that load on first use instead of at import time (fork server and its workers).

Why: ``import monai`` imports, through MONAI's ``optional_import``, libraries that only a
handful of MONAI functions use (``scipy.signal`` with ``scipy.stats``, ``sklearn``,
``matplotlib.pyplot``, a few SciPy/scikit-image subpackages). Measured with
``benchmarks/lazy_imports.py`` (2-core machine, three loaded runs, docs/benchmarks.md
"Deferred imports"): the fork server's preload takes 1.7-3.3 s with this module, 3.1-5.5 s
without; :class:`importlib.util.LazyLoader` keeps none of the 12 modules unloaded
(``optional_import`` reads ``__file__`` and takes names with ``getattr``, and either loads
a LazyLoader module at once), so it does no better than nothing. The cost: a worker whose
pipeline needs one of them (``segment.gmm`` needs scikit-learn) imports it on its first
case (+1.0-1.4 s there).

:func:`defer` puts a module object for each name into ``sys.modules`` whose code has not
run yet; its ``__file__``, ``__spec__`` and ``__path__`` are there from the start, so asking
whether it exists does not load it. The first look-up of anything the module defines runs
its code, in place. Names that MONAI takes with ``from m import name`` are pre-placed as
stand-ins that load the module when called. Importing a submodule of a deferred package
loads the package first (:class:`_ParentFirst`), so an ``__init__`` runs before its
children and never twice. ``VOXPIPE_EAGER_IMPORTS=1`` turns it off.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Iterable, Mapping

EAGER_ENV = "VOXPIPE_EAGER_IMPORTS"

_LOCK = threading.RLock()
_LOADING: set[str] = set()


class DeferredModule(types.ModuleType):
    """A module whose code runs on the first look-up of a name it has not defined yet."""

    def __getattr__(self, name: str):  # only called for names not (yet) in the module
        load(self)
        if type(self) is types.ModuleType:  # loaded: look up as in any module (PEP 562 hook included)
            return getattr(self, name)
        raise AttributeError(f"partially initialised module {self.__name__!r} has no attribute {name!r} (a circular import)")

    def __dir__(self):
        load(self)
        return sorted(self.__dict__)


class DeferredName:
    """Stands in for ``module.name`` until called; then the module loads and the real one runs."""

    def __init__(self, module: DeferredModule, name: str) -> None:
        self._module, self._name = module, name

    def resolve(self):
        load(self._module)  # which also removes the stand-ins the module's code did not replace
        real = getattr(self._module, self._name)  # through the module's own __getattr__, if any
        if real is self:  # the module is still loading (a circular import)
            raise AttributeError(f"module {self._module.__name__!r} has no attribute {self._name!r} yet")
        return real

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, attribute: str):
        return getattr(self.resolve(), attribute)

    def __repr__(self) -> str:
        return f"<deferred {self._module.__name__}.{self._name}>"


def is_deferred(module) -> bool:
    """Whether ``module`` is deferred and its code has not run yet."""
    return type(module) is DeferredModule


def load(module: types.ModuleType) -> None:
    """Run a deferred module's code now (once; a no-op for ordinary modules).

    While its code runs, look-ups from the same thread see it partly initialised (as with
    any circular import); other threads wait.
    """
    if type(module) is not DeferredModule:
        return
    name = module.__name__
    with _LOCK:
        if type(module) is not DeferredModule or name in _LOADING:
            return
        _LOADING.add(name)
        try:
            module.__spec__.loader.exec_module(module)
        except BaseException:
            _forget(module)
            raise
        finally:
            _LOADING.discard(name)
        module.__class__ = types.ModuleType
        for attribute, value in list(module.__dict__.items()):
            if isinstance(value, DeferredName) and value._module is module:
                del module.__dict__[attribute]  # a name the module provides lazily, or not at all


def _forget(module: types.ModuleType) -> None:
    """A deferred module whose code failed is removed, as Python removes a failed import."""
    module.__class__ = types.ModuleType
    name = module.__name__
    if sys.modules.get(name) is module:
        del sys.modules[name]
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if parent is not None and parent.__dict__.get(child) is module:
        delattr(parent, child)


def defer(names: Mapping[str, Iterable[str]] | Iterable[str]) -> list[str]:
    """Defer each module in ``names`` (a mapping gives the names to pre-place as stand-ins).

    Modules already imported, or not installed, are left alone. Parents are deferred before
    children, so ``{"matplotlib": (), "matplotlib.pyplot": ()}`` imports neither. Returns
    the names deferred.
    """
    import os

    if os.environ.get(EAGER_ENV, "").lower() in {"1", "true", "yes"}:
        return []
    stand_ins = dict(names) if isinstance(names, Mapping) else {n: () for n in names}
    _install_finder()
    done = []
    for name in sorted(stand_ins, key=lambda n: n.count(".")):
        module = _deferred_module(name)
        if module is None:
            continue
        for attribute in stand_ins[name]:
            module.__dict__[attribute] = DeferredName(module, attribute)
        done.append(name)
    return done


def _deferred_module(name: str) -> DeferredModule | None:
    if name in sys.modules:
        return None
    parent_name, _, child = name.rpartition(".")
    parent = None
    if parent_name:
        parent = sys.modules.get(parent_name)
        if parent is None:
            parent = importlib.import_module(parent_name)  # an ordinary parent is imported as usual
        spec = importlib.machinery.PathFinder.find_spec(name, getattr(parent, "__path__", None) or [])
    else:
        spec = importlib.machinery.PathFinder.find_spec(name)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return None
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredModule
    sys.modules[name] = module
    if parent is not None:
        parent.__dict__[child] = module  # what the import system does once a submodule is loaded
    return module


class _AlreadyLoaded:
    """Loader for a submodule that loading its deferred parent has just imported: reuse it."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module, self.spec = module, module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # the import system set ours; put the module's own back


class _ParentFirst:
    """Meta path finder: before a submodule of a deferred package is imported, load the package."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        parent_name = fullname.rpartition(".")[0]
        parent = sys.modules.get(parent_name) if parent_name else None
        if parent is None or not is_deferred(parent) or parent_name in _LOADING:
            return None
        load(parent)
        loaded = sys.modules.get(fullname)
        if loaded is None:
            return None  # the ordinary finders take it from here
        # The package's __init__ imported it. Python then reloads from the module's own
        # __spec__ (importlib._bootstrap._find_spec), so that spec must be one that reuses it.
        spec = importlib.util.spec_from_loader(fullname, _AlreadyLoaded(loaded))
        loaded.__spec__ = spec
        return spec

    @staticmethod
    def invalidate_caches() -> None:
        pass


def _install_finder() -> None:
    if not any(finder is _ParentFirst for finder in sys.meta_path):
        sys.meta_path.insert(0, _ParentFirst)
