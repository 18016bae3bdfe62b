"""Cached, resumable, checksum-verified HTTP downloads with ``urllib`` (no extra dependency)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from lmforge import __version__
from lmforge.core.errors import UserError

_CHUNK = 1 << 16


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_url(
    url: str,
    *,
    cache_dir: str | Path,
    sha256: str | None = None,
    filename: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` into ``cache_dir`` once and return the local path.

    A finished file is renamed into place atomically, so a cached file is always complete and
    a second call makes no request (when ``sha256`` is set the cached copy is re-verified). An
    interrupted download stays as ``<file>.part`` and the next call resumes it with an HTTP
    Range request. A tqdm bar on stderr shows progress unless ``progress=False``.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"url {url!r} is not an http(s) URL; use e.g. https://host/data.csv")
    expected = sha256.strip().lower() if sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise UserError(f"sha256 {sha256!r} for {url} is not 64 hex digits; copy the full hash")
    base = filename or PurePosixPath(urllib.parse.unquote(parsed.path)).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    # The URL hash in the name keeps same-named files from different hosts apart.
    target = Path(cache_dir) / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"
    if target.exists():
        if expected is None or _file_sha256(target) == expected:
            return target
        target.unlink()  # stale or corrupted copy: fetch it again below
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _download(url, part, timeout, progress, base)
    if expected is not None:
        actual = _file_sha256(part)
        if actual != expected:
            part.unlink()
            raise UserError(
                f"{url}: sha256 mismatch, expected {expected} but got {actual}; the file "
                "changed upstream or is corrupt: check the url and the sha256 setting"
            )
    os.replace(part, target)
    return target


def _download(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    from tqdm import tqdm

    # Two tries: the second starts from scratch when the server refuses or mangles the Range.
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"lmforge/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                part.unlink()
                continue
            raise UserError(f"{url}: HTTP {e.code} {e.reason}; check the url") from None
        except (urllib.error.URLError, OSError) as e:
            # urlopen raises a bare TimeoutError or wraps it in URLError, depending on the stage.
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):
                raise UserError(
                    f"{url}: no response within {timeout} s; check the url or raise timeout"
                ) from None
            raise UserError(f"{url}: cannot connect ({reason}); check the url and your network") from None
        with response:
            resumed = offset > 0 and response.status == 206
            if resumed:
                start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if start is None or int(start.group(1)) != offset:
                    part.unlink()
                    continue
            else:
                offset = 0  # the server sent the whole file (it ignored or lacks Range support)
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            received = offset
            with (
                part.open("ab" if resumed else "wb") as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (http.client.HTTPException, OSError) as e:
                    raise UserError(
                        f"{url}: download interrupted after {received} bytes ({type(e).__name__}); "
                        "run again to resume"
                    ) from None
            if total is not None and received < total:
                raise UserError(
                    f"{url}: download interrupted after {received} of {total} bytes; run again to resume"
                )
            return
    raise UserError(f"{url}: server keeps rejecting the resume request; delete {part} and retry")
