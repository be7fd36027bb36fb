"""The component registry: Python entry points plus in-process registrations.

Listing reads only package metadata (no component module is imported); :func:`get` imports the
one component asked for and caches it. A spec can only reach names found here: nothing is ever
imported from a user-supplied module path.

Names (see docs/plugins.md):

* a name is looked up exactly first; plugins are encouraged to register ``vendor.name`` names
  (``example.tiny_convnet``), which may then be written short (``tiny_convnet``) as long as only
  one installed name ends with ``.tiny_convnet``;
* ``distribution:name`` (``fnl-plugin-example:example.tiny_convnet``) picks the entry of one
  distribution exactly: the way out when two distributions advertise the same name.

Precedence and conflicts:

* an in-process registration (:func:`register`) of a name that an installed distribution already
  provides is an error unless ``override=True``; with it, the in-process object wins;
* the same name advertised by two different distributions is an error listing the qualified
  names that resolve each (there is no silent pick); :func:`entries` still lists both so
  ``fnl list`` shows the clash.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fnl_core.groups import ALL_GROUPS, component_group_of, normalize_group

IN_PROCESS = "<in-process>"


class RegistryError(ValueError):
    """A name could not be resolved in a group (unknown, ambiguous or taken)."""


class UnknownComponentError(RegistryError, LookupError):
    """No installed or registered component has this name in this group."""


class AmbiguousComponentError(RegistryError):
    """Two installed distributions advertise the same name in the same group."""


class PluginLoadError(ImportError):
    """An entry point exists but importing the object it names failed."""


class MissingComponentError(UnknownComponentError):
    """A command needs a component that is not installed (names the package to install)."""


class MissingDependencyError(RegistryError, ImportError):
    """An optional Python package is not installed (names the extra that installs it)."""


@dataclass(frozen=True)
class ComponentInfo:
    """One registry entry, described without importing it."""

    group: str
    name: str
    target: str
    """``module:attribute`` for entry points, ``repr`` of the object for in-process entries."""
    distribution: str
    version: str

    @property
    def qualified_name(self) -> str:
        """``distribution:name``; resolves to exactly this entry even when names clash."""
        if self.distribution == IN_PROCESS:
            return self.name
        return f"{self.distribution}:{self.name}"


@dataclass
class _Local:
    obj: Any
    override: bool


_lock = threading.RLock()
_local: dict[str, dict[str, _Local]] = {}
_loaded: dict[tuple[str, str, str], Any] = {}
_scanned: dict[tuple[Any, ...], list[tuple[EntryPoint, str, str]]] = {}


def refresh() -> None:
    """Forget the cached entry points (after installing a plugin into a running process)."""
    with _lock:
        _scanned.clear()


def _entry_points(group: str) -> list[tuple[EntryPoint, str, str]]:
    """Entry points of ``group`` with their distribution name and version, deduplicated.

    Reading package metadata costs tens of milliseconds per call, so the result is cached per
    ``sys.path`` (a changed path scans again; :func:`refresh` forgets everything).
    """
    key = (group, entry_points, tuple(sys.path))
    with _lock:
        cached = _scanned.get(key)
    if cached is None:
        cached = _scan_entry_points(group)
        with _lock:
            _scanned[key] = cached
    return list(cached)


def _scan_entry_points(group: str) -> list[tuple[EntryPoint, str, str]]:
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


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _ambiguous(group: str, name: str, infos: list[ComponentInfo]) -> AmbiguousComponentError:
    if {i.name for i in infos} == {name}:
        found = f"is provided by several distributions: {', '.join(i.distribution for i in infos)}"
        choices = [i.qualified_name for i in infos]
    else:
        found = "matches several: " + ", ".join(f"{i.name} ({i.distribution})" for i in infos)
        choices = [i.name for i in infos]
    return AmbiguousComponentError(
        f"{group} component {name!r} {found}; name one exactly: "
        f"{' or '.join(repr(c) for c in choices)}"
    )


def _find(group: str, name: str) -> tuple[ComponentInfo, EntryPoint | _Local]:
    """The one entry ``name`` designates in ``group`` (exact, ``dist:name`` or short name)."""
    with _lock:
        local = dict(_local.get(group, {}))
    points = _entry_points(group)
    if ":" in name:
        dist_part, short = name.split(":", 1)
        for ep, dist, ver in points:
            if ep.name == short and _normalize_dist(dist) == _normalize_dist(dist_part):
                return ComponentInfo(group, ep.name, ep.value, dist, ver), ep
        raise _unknown(group, name)
    if name in local:
        entry = local[name]
        return ComponentInfo(group, name, repr(entry.obj), IN_PROCESS, ""), entry
    exact = [(ep, d, v) for ep, d, v in points if ep.name == name]
    if len({d for _, d, _ in exact}) > 1:
        raise _ambiguous(
            group, name, [ComponentInfo(group, name, e.value, d, v) for e, d, v in exact]
        )
    if exact:
        ep, dist, ver = exact[0]
        return ComponentInfo(group, name, ep.value, dist, ver), ep
    suffix = "." + name
    longer = sorted({n for n in names(group) if n.endswith(suffix)})
    if len(longer) == 1:
        return _find(group, longer[0])
    if len(longer) > 1:
        raise _ambiguous(group, name, [i for i in entries(group) if i.name in longer])
    raise _unknown(group, name)


def resolve(group: str, name: str) -> ComponentInfo:
    """Which entry ``name`` designates in ``group``, without importing it.

    Raises :class:`UnknownComponentError` or :class:`AmbiguousComponentError` (which lists the
    exact names to use instead).
    """
    return _find(normalize_group(group), name)[0]


def get(group: str, name: str) -> Any:
    """Return the object registered as ``name`` in ``group``, importing it on first use."""
    group = normalize_group(group)
    info, entry = _find(group, name)
    if isinstance(entry, _Local):
        return entry.obj
    key = (group, info.name, entry.value)
    with _lock:
        if key in _loaded:
            return _loaded[key]
    try:
        obj = entry.load()
    except Exception as exc:
        raise PluginLoadError(
            f"{group} component {info.name!r} from distribution {info.distribution!r} failed to "
            f"load ({entry.value}): {type(exc).__name__}: {exc}"
        ) from exc
    with _lock:
        _loaded[key] = obj
    return obj


def require(group: str, name: str, *, purpose: str, extra: str | None = None) -> ComponentInfo:
    """Check before long work that ``name`` is installed in ``group``; nothing is imported.

    The error names ``purpose`` (``"fnl train's evaluation"``) and what to install: the package
    that ships the group's built-ins, or ``extra`` (``"fnl-detector[eval]"``) when given.
    """
    group = normalize_group(group)
    try:
        return resolve(group, name)
    except AmbiguousComponentError:
        raise
    except UnknownComponentError as exc:
        install = extra or ALL_GROUPS[group]
        found = (
            f"installed: {_describe_installed(group)}"
            if entries(group)
            else f"no {group} component is installed"
        )
        raise MissingComponentError(
            f"{purpose} needs the {group} component {name!r}, which is not installed "
            f"({found}); install {install} (pip install '{install}')"
        ) from exc


def require_module(module: str, *, purpose: str, extra: str) -> Any:
    """Import ``module``, or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingDependencyError(
            f"{purpose} needs the Python package {exc.name!r}, which is not installed; "
            f"install it with: pip install '{extra}'"
        ) from exc


def provenance(spec: dict[str, Any], spec_name: str = "detector") -> dict[str, dict[str, str]]:
    """Which distribution (and version) provides each component of a spec.

    ``spec`` is a spec as a dict (``DetectorSpec.to_dict()``); ``spec_name`` the ``fnl.specs``
    entry describing it. Returns ``{"neck": {"name": "bifpn", "distribution": "fnl-necks",
    "version": "0.1.0"}, "densepose.head": {...}, ...}`` for every component field that is set.
    Written into a run's ``spec.json`` and an export manifest so that a reader knows what to
    install to rebuild the model.
    """
    model = get("fnl.specs", spec_name)
    out: dict[str, dict[str, str]] = {}
    _walk_provenance(model, spec, "", out)
    return out


#: Key under which :func:`with_provenance` stores the record in a spec file; spec loaders drop
#: keys starting with ``$`` (``$schema`` too), so the file stays a loadable spec.
PROVENANCE_KEY = "$provenance"


def with_provenance(spec: dict[str, Any], spec_name: str = "detector") -> dict[str, Any]:
    """``spec`` plus its :func:`provenance` under ``"$provenance"`` (for a run's ``spec.json``)."""
    return {**spec, PROVENANCE_KEY: provenance(spec, spec_name)}


def _walk_provenance(model: Any, data: Any, prefix: str, out: dict[str, dict[str, str]]) -> None:
    import typing

    from pydantic import BaseModel

    if not isinstance(data, dict):
        return
    for field_name, field in model.model_fields.items():
        value = data.get(field_name)
        path = f"{prefix}{field_name}"
        group = component_group_of(field)
        if group is not None:
            if isinstance(value, dict) and isinstance(value.get("type"), str):
                info = resolve(group, value["type"])
                out[path] = {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                }
                config = get(group, value["type"])
                if isinstance(config, type) and issubclass(config, BaseModel):
                    _walk_provenance(config, value, path + ".", out)
            continue
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        for sub in candidates:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                _walk_provenance(sub, value, path + ".", out)
                break


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
