"""The component registry: Python entry points plus in-process registrations.

Listing reads only package metadata (no component module is imported); :func:`get` imports the
one component asked for and caches it. A spec can only reach names found here: nothing is ever
imported from a user-supplied module path.

Precedence and conflicts:

* an in-process registration (:func:`register`) of a name that an installed distribution already
  provides is an error unless ``override=True``; with it, the in-process object wins;
* the same name advertised by two different distributions is an error naming both (there is no
  silent pick); :func:`entries` still lists both so ``fnl list`` shows the clash.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fnl_core.groups import ALL_GROUPS, normalize_group

IN_PROCESS = "<in-process>"


class RegistryError(ValueError):
    """A name could not be resolved in a group (unknown, ambiguous or taken)."""


class UnknownComponentError(RegistryError, LookupError):
    """No installed or registered component has this name in this group."""


class AmbiguousComponentError(RegistryError):
    """Two installed distributions advertise the same name in the same group."""


class PluginLoadError(ImportError):
    """An entry point exists but importing the object it names failed."""


@dataclass(frozen=True)
class ComponentInfo:
    """One registry entry, described without importing it."""

    group: str
    name: str
    target: str
    """``module:attribute`` for entry points, ``repr`` of the object for in-process entries."""
    distribution: str
    version: str


@dataclass
class _Local:
    obj: Any
    override: bool


_lock = threading.RLock()
_local: dict[str, dict[str, _Local]] = {}
_loaded: dict[tuple[str, str, str], Any] = {}


def _entry_points(group: str) -> list[tuple[EntryPoint, str, str]]:
    """Entry points of ``group`` with their distribution name and version, deduplicated."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in entry_points(group=group):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "<unknown>"
        ver = ep.dist.version if ep.dist is not None else "?"
        key = (ep.name, ep.value, dist)
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        out.append((ep, dist, ver))
    return out


def entries(group: str) -> list[ComponentInfo]:
    """Every entry of ``group``, sorted by name; imports nothing."""
    group = normalize_group(group)
    with _lock:
        local = dict(_local.get(group, {}))
    infos = [
        ComponentInfo(group, ep.name, ep.value, dist, ver)
        for ep, dist, ver in _entry_points(group)
        if not (ep.name in local and local[ep.name].override)
    ]
    infos += [ComponentInfo(group, n, repr(e.obj), IN_PROCESS, "") for n, e in local.items()]
    return sorted(infos, key=lambda i: (i.name, i.distribution))


def names(group: str) -> list[str]:
    """Sorted unique names available in ``group``."""
    return sorted({i.name for i in entries(group)})


def _describe_installed(group: str) -> str:
    infos = entries(group)
    if not infos:
        return "none are installed"
    return ", ".join(f"{i.name} ({i.distribution})" for i in infos)


def _unknown(group: str, name: str) -> UnknownComponentError:
    available = names(group)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    provider = ALL_GROUPS[group]
    return UnknownComponentError(
        f"unknown {group} component {name!r}{hint} Installed: {_describe_installed(group)}. "
        f"The built-in {group} components come with the {provider} package; plugins add more "
        f'by declaring a [project.entry-points."{group}"] entry.'
    )


def get(group: str, name: str) -> Any:
    """Return the object registered as ``name`` in ``group``, importing it on first use."""
    group = normalize_group(group)
    with _lock:
        local = _local.get(group, {}).get(name)
    if local is not None:
        return local.obj
    candidates = [(ep, d, v) for ep, d, v in _entry_points(group) if ep.name == name]
    if not candidates:
        raise _unknown(group, name)
    dists = sorted({d for _, d, _ in candidates})
    if len(dists) > 1:
        raise AmbiguousComponentError(
            f"{group} component {name!r} is provided by several distributions: "
            f"{', '.join(dists)}. Uninstall one of them, or register the one you want in-process "
            f"with fnl_core.registry.register({group!r}, {name!r}, obj, override=True)."
        )
    ep, dist, _ = candidates[0]
    key = (group, name, ep.value)
    with _lock:
        if key in _loaded:
            return _loaded[key]
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginLoadError(
            f"{group} component {name!r} from distribution {dist!r} failed to load "
            f"({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    with _lock:
        _loaded[key] = obj
    return obj


def register(group: str, name: str, obj: Any, *, override: bool = False) -> None:
    """Register ``obj`` under ``name`` in ``group`` for this process (tests, notebooks).

    Registering the same object twice is a no-op. A different object under a name that is
    already taken (in-process or by an installed distribution) raises unless ``override``.
    """
    group = normalize_group(group)
    with _lock:
        current = _local.get(group, {}).get(name)
        if current is not None and current.obj is obj:
            return
        if not override:
            if current is not None:
                raise RegistryError(
                    f"{group} name {name!r} is already registered in-process ({current.obj!r}); "
                    "pass override=True to replace it"
                )
            installed = [d for ep, d, _ in _entry_points(group) if ep.name == name]
            if installed:
                raise RegistryError(
                    f"{group} name {name!r} is already provided by {', '.join(installed)}; "
                    "pass override=True to shadow it in this process"
                )
        _local.setdefault(group, {})[name] = _Local(obj, override)


def unregister(group: str, name: str) -> None:
    """Remove an in-process registration; installed entry points cannot be removed."""
    group = normalize_group(group)
    with _lock:
        if name not in _local.get(group, {}):
            raise RegistryError(f"{group} name {name!r} is not registered in-process")
        del _local[group][name]


@contextmanager
def registered(group: str, name: str, obj: Any, *, override: bool = False) -> Iterator[Any]:
    """Register ``obj`` for the duration of a ``with`` block, restoring what was there before."""
    group = normalize_group(group)
    with _lock:
        previous = _local.get(group, {}).get(name)
    register(group, name, obj, override=override or previous is not None)
    try:
        yield obj
    finally:
        with _lock:
            if previous is None:
                _local.get(group, {}).pop(name, None)
            else:
                _local[group][name] = previous
