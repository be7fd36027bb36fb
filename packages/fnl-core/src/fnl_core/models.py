"""Named models: model cards advertised under the ``fnl.models`` entry-point group.

A model card says which detector a name stands for (a preset, or a spec file), where its
weights are (a URL, or a file shipped inside the providing package), how to check them
(sha256, size) and what the authors report for it. Any package can ship cards::

    [project.entry-points."fnl.models"]
    my_model = "my_package.models:my_model"

where ``my_package.models.my_model`` is a :class:`ModelCard` (for example
``ModelCard.from_resource(__name__, "cards/my_model.json")``). Everything here is torch-free:
``fnl list models`` reads cards without building anything; :func:`fetch_weights` downloads into
the cache (``$FNL_CACHE_DIR/models/NAME/`` or ``~/.cache/fnl/models/NAME/``) on first use.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fnl_core import registry
from fnl_core.download import DownloadError, cache_root, check_hash, download, file_sha256
from fnl_core.errors import InputError
from fnl_core.groups import MODELS

_URL_SCHEMES = ("http://", "https://", "file:")
_HEX = re.compile(r"^[0-9a-f]+$")
#: Metric keys of ``reported`` (AP in percent), in the order ``fnl list models`` shows them.
METRICS = ("bbox", "segm", "gps", "gpsm")


class ModelCardError(InputError):
    """A model card is malformed, or names weights that cannot be found."""


class ModelCard(BaseModel):
    """What a model name stands for: architecture, weights, checks and reported accuracy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the name used with --model (lower case, digits, _)")
    description: str = ""
    preset: str | None = Field(None, description="registered preset the weights fit")
    spec: str | None = Field(
        None, description="spec file, relative to the providing package unless absolute"
    )
    weights: str | None = Field(
        None,
        description="http(s):// or file: URL, or a path relative to the providing package; "
        "null when the authors only publish a download page",
    )
    download_page: str | None = Field(
        None, description="where to get the weights by hand (when there is no direct URL)"
    )
    file_name: str | None = Field(None, description="name in the cache (default: URL's last part)")
    sha256: str | None = Field(None, description="sha256 of the weights file (hex)")
    sha256_prefix: str | None = Field(
        None, description="leading hex digits of the sha256, where only those are known"
    )
    size_bytes: int | None = Field(None, ge=1)
    reported: dict[str, float] = Field(
        default_factory=dict, description="accuracy the authors report, AP in percent"
    )
    reported_on: str | None = Field(None, description="data the reported accuracy was measured on")
    dataset: str | None = Field(
        None,
        description="the data the model was trained on and its reported AP measured on: coco "
        "(DensePose-COCO, real photographs) or toy (synthetic toy people only; such a model "
        "warns when run on other images)",
    )
    source: str | None = Field(None, description="page the facts of this card come from")
    license: str | None = None
    package: str | None = Field(
        None, description="import name of the package relative paths are resolved in"
    )
    notes: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.]*", value):
            raise ValueError(f"model name {value!r}: use lower-case letters, digits, '_' and '.'")
        return value

    @field_validator("sha256", "sha256_prefix")
    @classmethod
    def _check_hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        if not _HEX.match(value) or len(value) > 64:
            raise ValueError(f"expected hexadecimal digits (at most 64), got {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _check_full(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 64:
            raise ValueError(f"a sha256 has 64 hex digits, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _check_sources(self) -> ModelCard:
        if self.weights is None and self.download_page is None:
            raise ValueError("give weights (URL or package path) or a download_page")
        relative = self.weights is not None and not Path(self.weights).is_absolute()
        if relative and not self.is_url and self.package is None:
            raise ValueError(
                f"weights {self.weights!r} is a relative path: the card needs 'package'"
            )
        unknown = sorted(set(self.reported) - set(METRICS))
        if unknown:
            raise ValueError(f"reported: unknown metric(s) {unknown}; expected {list(METRICS)}")
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_resource(cls, package: str, path: str) -> ModelCard:
        """The card in JSON file ``path`` of ``package`` (relative paths resolve there too).

        ``package`` may be a module's ``__name__``: its package is used.
        """
        package = _package_of(package)
        try:
            text = resources.files(package).joinpath(path).read_text(encoding="utf-8")
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            raise ModelCardError(f"model card {path!r} not found in package {package}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"model card {package}/{path}: invalid JSON: {exc}") from exc
        return cls.validated({"package": package, **data}, f"{package}/{path}")

    @classmethod
    def validated(cls, data: dict[str, Any], where: str) -> ModelCard:
        """Validate ``data``; errors become one :class:`ModelCardError` naming ``where``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in exc.errors()
            )
            raise ModelCardError(f"model card {where}: {problems}") from None

    # ------------------------------------------------------------------ weights location
    @property
    def is_url(self) -> bool:
        return self.weights is not None and self.weights.startswith(_URL_SCHEMES)

    def packaged_weights(self) -> Path | None:
        """The weights file shipped inside the providing package (None for URL cards)."""
        if self.weights is None or self.is_url:
            return None
        if Path(self.weights).is_absolute():
            return Path(self.weights)
        return Path(str(resources.files(self.package).joinpath(self.weights)))

    def packaged_spec(self) -> Path | None:
        """The card's spec file, if it names one."""
        if self.spec is None:
            return None
        if Path(self.spec).is_absolute() or self.package is None:
            return Path(self.spec)
        return Path(str(resources.files(self.package).joinpath(self.spec)))

    def cache_path(self) -> Path:
        """Where a downloaded copy lives: ``<cache root>/models/<name>/<file name>``."""
        name = self.file_name or (self.weights or "").rstrip("/").rsplit("/", 1)[-1]
        return cache_root() / "models" / self.name / (name or "weights")

    def weights_location(self) -> str:
        """The URL, package path or download page, for listings and messages."""
        if self.weights is None:
            return f"(manual) {self.download_page}"
        if self.is_url:
            return self.weights
        return f"{self.package}/{self.weights}" if self.package else self.weights


def _package_of(name: str) -> str:
    """``name`` if it is a package, else the package holding module ``name``."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ModelCardError(f"model card package {name!r} cannot be imported: {exc}") from exc
    if hasattr(module, "__path__"):
        return name
    return module.__package__ or name


def get_card(name: str) -> ModelCard:
    """The card registered as ``name`` under ``fnl.models`` (unknown names list the known)."""
    obj = registry.get(MODELS, name)
    if isinstance(obj, dict):
        obj = ModelCard.validated(obj, name)
    if not isinstance(obj, ModelCard):
        raise ModelCardError(
            f"fnl.models entry {name!r} is {type(obj).__name__}, expected a fnl_core.models."
            "ModelCard"
        )
    if obj.name != name:
        raise ModelCardError(f"fnl.models entry {name!r} holds the card of {obj.name!r}")
    return obj


def fetch_weights(card: ModelCard, *, progress: bool = True) -> Path:
    """A verified local weights file for ``card``: shipped, cached, or downloaded now.

    A cached file whose hash no longer matches is deleted and downloaded again.
    """
    hashes = {"sha256": card.sha256, "sha256_prefix": card.sha256_prefix}
    if card.weights is None:
        raise DownloadError(
            f"model {card.name}: the authors publish the weights only on {card.download_page} "
            "(no direct download); download the file there and pass --weights PATH"
        )
    packaged = card.packaged_weights()
    if packaged is not None:
        if not packaged.is_file():
            raise ModelCardError(
                f"model {card.name}: weights file {packaged} is missing from the installed "
                f"{card.package} package; reinstall it or pass --weights PATH"
            )
        if card.sha256 is not None:
            check_hash(file_sha256(packaged), str(packaged), **hashes)
        return packaged
    target = card.cache_path()
    if target.is_file():
        if card.sha256 is None and card.sha256_prefix is None:
            return target
        try:
            check_hash(file_sha256(target), str(target), **hashes)
            return target
        except DownloadError as exc:
            print(f"fnl: {exc}; downloading it again", file=sys.stderr)
            target.unlink()
    print(f"fnl: downloading {card.name} from {card.weights} to {target}", file=sys.stderr)
    return download(card.weights, target, size=card.size_bytes, progress=progress, **hashes)


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header without torch."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InputError(f"{path}: truncated safetensors file (no header)")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000 or length > path.stat().st_size - 8:
            raise InputError(f"{path}: corrupt safetensors header (length {length})")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: corrupt safetensors header: {exc}") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def list_cards() -> list[tuple[registry.ComponentInfo, ModelCard | Exception]]:
    """Every ``fnl.models`` entry with its card, or the error that loading it raised."""
    rows: list[tuple[registry.ComponentInfo, ModelCard | Exception]] = []
    for info in registry.entries(MODELS):
        try:
            rows.append((info, get_card(info.name)))
        except (registry.RegistryError, registry.PluginLoadError, ModelCardError) as exc:
            rows.append((info, exc))
    return rows


__all__ = [
    "METRICS",
    "ModelCard",
    "ModelCardError",
    "fetch_weights",
    "get_card",
    "list_cards",
    "safetensors_metadata",
]
