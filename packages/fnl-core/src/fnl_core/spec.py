"""Spec building blocks: component configs, registry-resolved fields, shapes and spec files.

A component field of a spec is JSON like ``{"type": "bifpn", "out_channels": 64}``. Validation
is two-pass: the field first only needs a ``type`` string; the registry then picks the config
class registered under that name in the field's group, which validates the remaining options
(extra options are forbidden). Errors keep their full path, e.g. ``neck.out_channels``.

Nothing here imports torch: validating a spec or printing its schema stays fast.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fnl_core import registry
from fnl_core.groups import (
    ComponentGroup,
    annotation_group,
    component_group_of,
    normalize_group,
)


@dataclass(frozen=True)
class ShapeSpec:
    """What a feature map looks like: channel count and stride relative to the input image."""

    channels: int
    stride: int


class SpecModel(BaseModel):
    """Base of spec sections and component configs: unknown keys are refused, and the error
    names the closest known key (``test.score_threshold: Extra inputs are not permitted (did
    you mean 'score_thresh'?)``) or, with none close, the keys there are."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="wrap")
    @classmethod
    def _name_known_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            if not any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in exc.errors()):
                raise
            details = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"] + _key_hint(cls, e)),
                    loc=e["loc"],
                    input=e["input"],
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(exc.title, details) from None


def _key_hint(model: type[BaseModel], error: Any) -> str:
    """`` (did you mean 'x'?)`` for an unknown key of ``model`` itself (else '')."""
    loc = error["loc"]
    if error["type"] != "extra_forbidden" or len(loc) != 1 or not isinstance(loc[0], str):
        return ""
    import difflib

    known = [name for name in model.model_fields if not name.startswith("_")]
    close = difflib.get_close_matches(loc[0], known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known keys: {', '.join(known)})"


class ComponentConfig(SpecModel):
    """Base of every component's config class: its fields are the component's options.

    Subclasses declare ``type: Literal["name"] = "name"`` (the registered name) and implement
    ``build(...)``, importing heavy dependencies (torch) inside it.
    """

    type: str

    #: Entry-point group this config belongs to; set by subclasses (used in messages).
    group: ClassVar[str] = ""

    #: The name the spec used when it qualified it by distribution (``dist:name``); written
    #: back on dump so that a saved spec resolves to the same entry.
    _registry_name: str | None = PrivateAttr(default=None)

    @model_serializer(mode="wrap")
    def _dump_registry_name(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        data = handler(self)
        if self._registry_name and isinstance(data, dict):
            data["type"] = self._registry_name
        return data

    def build(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


def resolve_component(group: str, value: Any) -> ComponentConfig:
    """Validate ``value`` (a mapping with ``type``, or a config instance) against its group."""
    group = normalize_group(group)
    if isinstance(value, ComponentConfig):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(
            f'expected an object like {{"type": NAME, ...options}} for a {group} component, '
            f"got {type(value).__name__}"
        )
    name = value.get("type")
    if not isinstance(name, str) or not name:
        raise ValueError(
            f'a {group} component needs a "type" naming one of: '
            f"{', '.join(registry.names(group)) or '(none installed)'}"
        )
    info = registry.resolve(group, name)
    cls = registry.get(group, name)
    if not (isinstance(cls, type) and issubclass(cls, ComponentConfig)):
        raise ValueError(f"{group} entry {name!r} is {cls!r}, not a ComponentConfig subclass")
    if info.name == name:
        return cls.model_validate(value)
    # a short name (``tiny_convnet`` for ``example.tiny_convnet``) or ``dist:name``
    config = cls.model_validate({**value, "type": info.name})
    if ":" in name:
        config._registry_name = name
    return config


def Component(group: str) -> Any:  # noqa: N802 - reads as a type in annotations
    """Annotation for a spec field holding any registered component of ``group``."""
    group = normalize_group(group)
    return Annotated[
        SerializeAsAny[ComponentConfig],
        ComponentGroup(group),
        BeforeValidator(lambda v: resolve_component(group, v)),
    ]


def _group_union(group: str) -> Any:
    classes = []
    for name in registry.names(group):
        try:
            cls = registry.get(group, name)
        except registry.RegistryError as exc:  # ambiguous: can't pick one for the schema
            warnings.warn(str(exc), stacklevel=2)
            continue
        except registry.PluginLoadError as exc:  # a broken plugin must not hide the others
            warnings.warn(str(exc), stacklevel=2)
            continue
        if isinstance(cls, type) and issubclass(cls, ComponentConfig):
            classes.append(cls)
    if not classes:
        return dict[str, Any]
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]  # noqa: UP007


def _materialize(model: type[BaseModel], cache: dict[type, type]) -> type[BaseModel]:
    """A copy of ``model`` whose component fields are unions of the installed components."""
    if model in cache:
        return cache[model]
    fields: dict[str, Any] = {}
    changed = False
    for fname, info in model.model_fields.items():
        group, optional = annotation_group(info.annotation)
        if group is None and info.metadata:
            for meta in info.metadata:
                if isinstance(meta, ComponentGroup):
                    group = meta.group
        annotation = info.annotation
        if group is not None:
            annotation = _group_union(group)
            if optional:
                annotation = annotation | None
            changed = True
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = _materialize(annotation, cache)
            changed |= sub is not annotation
            annotation = sub
        new_info = Field(
            default=info.default if not info.is_required() else ...,
            default_factory=info.default_factory,
            description=info.description,
            title=info.title,
        )
        fields[fname] = (annotation, new_info)
    if not changed:
        cache[model] = model
        return model
    new = create_model(  # type: ignore[call-overload]
        model.__name__, __config__=model.model_config, __doc__=model.__doc__, **fields
    )
    cache[model] = new
    return new


def spec_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of a spec model, listing every component installed right now."""
    schema = _materialize(model, {}).model_json_schema(mode="validation")
    properties = schema.setdefault("properties", {})
    properties["$schema"] = {"type": "string"}
    properties[registry.PROVENANCE_KEY] = {
        "type": "object",
        "description": "written by fnl: the package and version that provided each component "
        "(ignored when the spec is loaded)",
    }
    return schema


def group_json_schema(group: str) -> dict[str, Any]:
    """JSON Schema accepting any installed component of ``group``."""
    from pydantic import TypeAdapter

    return TypeAdapter(_group_union(normalize_group(group))).json_schema()


class SpecFileError(ValueError):
    """A spec file could not be read or parsed."""


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON (or YAML, when PyYAML is installed) spec file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise SpecFileError(f"spec file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise SpecFileError(
                f"{path}: reading YAML specs needs PyYAML (pip install pyyaml); JSON always works"
            ) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecFileError(f"{path}: invalid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecFileError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
    if not isinstance(data, dict):
        raise SpecFileError(f"{path}: a spec must be a JSON object, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``.

    Nested objects merge key by key, except that a component object whose ``type`` changes
    replaces the base object whole (the old component's options would not apply).
    """
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if (
            isinstance(old, dict)
            and isinstance(value, dict)
            and not ("type" in value and value.get("type") != old.get("type"))
        ):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"neck.out_channels=64"`` into ``{"neck": {"out_channels": 64}}``.

    The value is parsed as JSON when possible (numbers, booleans, lists, objects), otherwise
    kept as a string.
    """
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like dotted.key=value")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r} has an empty key segment")
    out: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per error: ``dotted.path: message``."""
    lines = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"{path}: {err['msg']}")
    return "\n".join(lines)


__all__ = [
    "Component",
    "ComponentConfig",
    "ComponentGroup",
    "ShapeSpec",
    "SpecFileError",
    "SpecModel",
    "component_group_of",
    "deep_merge",
    "format_validation_error",
    "group_json_schema",
    "parse_override",
    "read_spec_file",
    "resolve_component",
    "spec_json_schema",
]
