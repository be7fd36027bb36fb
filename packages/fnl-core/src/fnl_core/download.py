"""Downloading weights into the FnL cache, verified, with progress (standard library only).

A download goes to a temporary file next to its destination and is renamed into place only
once it is complete and its hash matches, so a partial or corrupt file is never used: an
interrupted download leaves no file under the final name, and a hash mismatch deletes what
arrived and raises :class:`DownloadError` naming the URL, the expected and the actual hash.

URLs may be ``http(s)://`` or ``file:`` (handy for mirrors and tests). The progress bar is
tqdm's when tqdm is installed, else one line on stderr rewritten in place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from fnl_core.errors import InputError
from fnl_core.files import atomic_output

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 30.0


class DownloadError(InputError):
    """A file could not be downloaded, or what arrived is not the file that was expected."""


def cache_root() -> Path:
    """``$FNL_CACHE_DIR`` if set, else ``~/.cache/fnl`` (the same root as the toy dataset)."""
    env = os.environ.get("FNL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fnl"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_hash(
    actual: str, source: str, *, sha256: str | None = None, sha256_prefix: str | None = None
) -> None:
    """Raise :class:`DownloadError` unless ``actual`` equals ``sha256`` / starts with the prefix."""
    if sha256 is not None and actual != sha256.lower():
        raise DownloadError(
            f"sha256 mismatch for {source}: expected {sha256.lower()}, got {actual}"
        )
    if sha256_prefix is not None and not actual.startswith(sha256_prefix.lower()):
        raise DownloadError(
            f"sha256 mismatch for {source}: expected a hash starting with "
            f"{sha256_prefix.lower()}, got {actual}"
        )


class _Progress:
    """tqdm if available, else a single stderr line updated at most every 0.2 s."""

    def __init__(self, total: int | None, label: str, enabled: bool) -> None:
        self.total, self.label, self.done = total, label, 0
        self._bar = None
        self._last = 0.0
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=True
        )

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self._print()

    def _print(self) -> None:
        mb = self.done / 1e6
        if self.total:
            text = f"{self.label}: {mb:.1f} / {self.total / 1e6:.1f} MB"
            text += f" ({100 * self.done / self.total:.0f}%)"
        else:
            text = f"{self.label}: {mb:.1f} MB"
        print(f"\r{text}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._print()
            print(file=sys.stderr, flush=True)


def _open(url: str, timeout: float) -> IO[bytes]:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"cannot download {url}: only http(s):// and file: URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": "fnl"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}; pass --weights PATH "
            "with a local copy instead"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); are you offline? Download it elsewhere and "
            "pass --weights PATH"
        ) from exc


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically and verify it; return ``dest``.

    ``size`` (bytes), when known, is checked too. ``on_chunk`` is called with each chunk's
    length (tests use it to interrupt a transfer). The temporary file is removed on any error.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    response = _open(url, timeout)
    digest = hashlib.sha256()
    with atomic_output(dest, suffix=".part") as tmp:
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and length.isdigit() else size
        bar = _Progress(total, dest.name, progress)
        with tmp.open("wb") as out, response:
            try:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"download of {url} broke off after {bar.done} bytes ({exc}); nothing was "
                    "kept, run the command again or pass --weights PATH"
                ) from exc
            finally:
                bar.close()
        received = tmp.stat().st_size
        if total is not None and received != total:
            raise DownloadError(
                f"download of {url} is incomplete: {received} of {total} bytes; nothing was "
                "kept, run the command again or pass --weights PATH"
            )
        if size is not None and received != size:
            raise DownloadError(f"size mismatch for {url}: expected {size} bytes, got {received}")
        check_hash(digest.hexdigest(), url, sha256=sha256, sha256_prefix=sha256_prefix)
    return dest


__all__ = [
    "DownloadError",
    "cache_root",
    "check_hash",
    "download",
    "file_sha256",
]
