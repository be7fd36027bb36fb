"""fnl_core.models: model cards in the fnl.models registry group, fetching, fnl list models."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from fnl_core import registry
from fnl_core.cli import main
from fnl_core.download import DownloadError
from fnl_core.errors import InputError
from fnl_core.groups import MODELS
from fnl_core.models import (
    ModelCard,
    ModelCardError,
    fetch_weights,
    get_card,
    safetensors_metadata,
)

PAYLOAD = b"weights" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 in a thread (nothing reaches the internet)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FNL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def site(tmp_path: Path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "model_final_abc.pkl").write_bytes(PAYLOAD)
    _CountingHandler.requests = []
    with serve(functools.partial(_CountingHandler, directory=str(root))) as url:
        yield url


def test_card_validation_errors_are_one_line() -> None:
    with pytest.raises(ModelCardError) as info:
        ModelCard.validated({"name": "Bad Name", "weights": "x.bin"}, "cards/bad.json")
    message = str(info.value)
    assert "cards/bad.json" in message and "name" in message and "\n" not in message
    with pytest.raises(ModelCardError, match=r"sha256: .*64 hex digits"):
        ModelCard.validated({"name": "m", "weights": "http://h/x", "sha256": "abc"}, "m")
    with pytest.raises(ModelCardError, match="download_page"):
        ModelCard.validated({"name": "m"}, "m")
    with pytest.raises(ModelCardError, match="needs 'package'"):
        ModelCard.validated({"name": "m", "weights": "w.safetensors"}, "m")
    with pytest.raises(ModelCardError, match="unknown metric"):
        ModelCard.validated({"name": "m", "weights": "http://h/x", "reported": {"ap": 1}}, "m")


def test_fetch_downloads_once_then_uses_cache(site: str, cache: Path) -> None:
    card = ModelCard(name="demo", weights=f"{site}/model_final_abc.pkl", sha256=SHA)
    path = fetch_weights(card, progress=False)
    assert path == cache / "models" / "demo" / "model_final_abc.pkl"
    assert path.read_bytes() == PAYLOAD
    assert fetch_weights(card, progress=False) == path
    assert len(_CountingHandler.requests) == 1


def test_corrupt_cached_file_is_downloaded_again(site: str, cache: Path) -> None:
    card = ModelCard(name="demo", weights=f"{site}/model_final_abc.pkl", sha256_prefix=SHA[:6])
    path = card.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert fetch_weights(card, progress=False).read_bytes() == PAYLOAD
    assert len(_CountingHandler.requests) == 1


def test_wrong_hash_in_card_fails_and_keeps_nothing(site: str, cache: Path) -> None:
    card = ModelCard(name="demo", weights=f"{site}/model_final_abc.pkl", sha256="1" * 64)
    with pytest.raises(DownloadError, match="1" * 64):
        fetch_weights(card, progress=False)
    assert list((cache / "models" / "demo").iterdir()) == []


def test_manual_download_card_explains_what_to_do(cache: Path) -> None:
    card = ModelCard(name="manual", download_page="https://example.invalid/page")
    with pytest.raises(DownloadError) as info:
        fetch_weights(card)
    assert "https://example.invalid/page" in str(info.value)
    assert "--weights PATH" in str(info.value)


def test_packaged_weights(tmp_path: Path) -> None:
    shipped = tmp_path / "w.safetensors"
    card = ModelCard(name="shipped", weights=str(shipped), sha256=SHA)
    with pytest.raises(ModelCardError, match="missing"):
        fetch_weights(card)
    shipped.write_bytes(PAYLOAD)
    assert fetch_weights(card) == shipped
    shipped.write_bytes(b"other")
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_weights(card)


def test_package_relative_paths_resolve_in_the_package() -> None:
    card = ModelCard(name="rel", weights="py.typed", spec="groups.py", package="fnl_core")
    assert card.packaged_weights().is_file()
    assert card.packaged_spec().name == "groups.py"
    assert card.weights_location() == "fnl_core/py.typed"


def _safetensors_bytes(metadata: dict[str, str]) -> bytes:
    header = json.dumps(
        {"__metadata__": metadata, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0\0\0\0"


def test_safetensors_metadata_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(_safetensors_bytes({"spec": '{"a": 1}', "format": "fnl-detector/1"}))
    assert safetensors_metadata(path) == {"spec": '{"a": 1}', "format": "fnl-detector/1"}
    path.write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match="truncated"):
        safetensors_metadata(path)
    path.write_bytes(struct.pack("<Q", 10**12))
    with pytest.raises(InputError, match="corrupt"):
        safetensors_metadata(path)


def test_get_card_through_the_registry() -> None:
    card = ModelCard(name="plugin_model", weights="https://example.invalid/m.pth")
    with registry.registered(MODELS, "plugin_model", card):
        assert get_card("plugin_model") is card
    with registry.registered(MODELS, "as_dict", {"name": "as_dict", "weights": "http://h/x"}):
        assert get_card("as_dict").weights == "http://h/x"
    with registry.registered(MODELS, "wrong", card), pytest.raises(ModelCardError, match="holds"):
        get_card("wrong")
    with pytest.raises(registry.UnknownComponentError, match=r"fnl\.models"):
        get_card("no_such_model_anywhere")


def test_fnl_list_models(capsys: pytest.CaptureFixture) -> None:
    card = ModelCard(
        name="plugin_model",
        preset="some_preset",
        weights="https://example.invalid/model_final_abc123.pkl",
        sha256_prefix="abc123",
        reported={"bbox": 61.25, "gps": 63.7},
    )
    with registry.registered(MODELS, "plugin_model", card):
        assert main(["list", "models"]) == 0
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith("plugin_model"))
        for text in (
            "some_preset",
            "61.2/-/63.7/-",
            "abc123... (prefix)",
            "<in-process>",
            "https://example.invalid/model_final_abc123.pkl",
        ):
            assert text in row
        assert main(["list", "models", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
    mine = next(r for r in rows if r["name"] == "plugin_model")
    assert mine["reported"] == {"bbox": 61.25, "gps": 63.7}
    assert mine["distribution"] == "<in-process>"


def test_fnl_list_models_does_not_import_torch() -> None:
    code = (
        "import sys; from fnl_core.cli import main; main(['list', 'models']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("NO TORCH")


def test_card_from_a_plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented plugin route: a module of the plugin builds its card from a JSON file."""
    pkg = tmp_path / "fnl_models_plugin_demo"
    (pkg / "cards").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "weights.safetensors").write_bytes(PAYLOAD)
    (pkg / "cards" / "demo.json").write_text(
        json.dumps({"name": "demo", "preset": "p", "weights": "weights.safetensors", "sha256": SHA})
    )
    (pkg / "models.py").write_text(
        "from fnl_core.models import ModelCard\n"
        "demo = ModelCard.from_resource(__name__, 'cards/demo.json')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from fnl_models_plugin_demo.models import demo

    assert demo.package == "fnl_models_plugin_demo"
    assert fetch_weights(demo) == pkg / "weights.safetensors"
    with pytest.raises(ModelCardError, match="not found"):
        ModelCard.from_resource("fnl_models_plugin_demo", "cards/missing.json")
