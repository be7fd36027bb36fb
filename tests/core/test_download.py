"""fnl_core.download: verified, atomic downloads from a local HTTP server and file: URLs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fnl_core.download import DownloadError, cache_root, download, file_sha256

PAYLOAD = bytes(range(256)) * 9000  # 2.3 MB: several chunks


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes, sends 10, then closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "weights.bin").write_bytes(PAYLOAD)
    with serve(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_renames(site: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "weights.bin"
    got = download(f"{site}/weights.bin", dest, sha256=SHA, progress=False)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["weights.bin"]
    assert file_sha256(dest) == SHA


def test_sha256_prefix_is_checked(site: str, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    download(f"{site}/weights.bin", dest, sha256_prefix=SHA[:6], progress=False)
    assert dest.is_file()
    dest.unlink()
    with pytest.raises(DownloadError, match="expected a hash starting with 000000"):
        download(f"{site}/weights.bin", dest, sha256_prefix="000000", progress=False)


def test_hash_mismatch_deletes_and_names_url_and_hashes(site: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "weights.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(f"{site}/weights.bin", dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert f"{site}/weights.bin" in message and wrong in message and SHA in message
    assert "\n" not in message
    assert _leftovers(dest.parent) == []


def test_interrupted_download_leaves_nothing(site: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "weights.bin"

    def stop(_n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download(f"{site}/weights.bin", dest, progress=False, on_chunk=stop)
    assert _leftovers(dest.parent) == []


def test_connection_closed_early_is_an_error(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "w.bin"
    with serve(_TruncatingHandler) as url, pytest.raises(DownloadError, match=r"w\.bin"):
        download(f"{url}/w.bin", dest, progress=False)
    assert _leftovers(dest.parent) == []


def test_size_mismatch(site: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="expected 5 bytes"):
        download(f"{site}/weights.bin", tmp_path / "w.bin", size=5, progress=False)


def test_offline_error_names_url_and_weights_option(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.pkl"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "m.pkl", progress=False, timeout=5)
    assert url in str(info.value) and "--weights PATH" in str(info.value)
    assert "\n" not in str(info.value)


def test_http_404(site: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{site}/missing.bin", tmp_path / "m.bin", progress=False)


def test_file_url(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"abc")
    dest = download(source.as_uri(), tmp_path / "out" / "x.bin", progress=False)
    assert dest.read_bytes() == b"abc"


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download("ftp://127.0.0.1/x", tmp_path / "x", progress=False)


def test_plain_progress_line_without_tqdm(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    download(f"{site}/weights.bin", tmp_path / "w.bin", progress=True)
    err = capsys.readouterr().err
    assert "w.bin: 2.3 / 2.3 MB (100%)" in err


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FNL_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("FNL_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "fnl"
