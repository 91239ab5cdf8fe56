"""Getting the CIFAR-10 archive: downloaded with pooch, or a local copy verified.

Online, pooch fetches the archive into a temporary file, retries what fails with
growing waits (``data.retries``), checks its md5 and only then moves it into place. The
downloader given to pooch streams the body with requests and refuses one larger than
an archive can be (cifar10/archive.py's MAX_FILE_BYTES), announced or sent, so a server
cannot fill the disk; a client error (HTTP 4xx but 408 and 429) or a host name that does
not resolve fails at once, since waiting will not help. Without an md5 (``data.md5:
null``) the archive's own checks must pass (gzip CRC and length, tar headers, the
CIFAR-10 members).

Offline, a local copy is verified and copied: ``CIFAR10_ARCHIVE=/path/to/archive`` in
the environment for a copy of the archive params.yaml describes (params.yaml, and so
the pipeline's state, stays as it is), or ``data.archive`` for another archive (a
change of data, so an experiment of its own).
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pooch
import requests
import urllib3
from tqdm import tqdm

from cifar10.archive import MAX_FILE_BYTES, check_archive, file_md5
from cifar10.atomic import atomic_outputs
from cifar10.errors import ParamsError, PipelineError, one_line
from cifar10.params import DataParams, check_absolute

# A copy of the archive that params.yaml describes, for machines without the network.
LOCAL_COPY_VARIABLE = "CIFAR10_ARCHIVE"
OFFLINE_HINT = (
    "offline, give a local copy of the archive: make repro ARCHIVE=/path/to/"
    f"cifar-10-python.tar.gz (which runs {LOCAL_COPY_VARIABLE}=/path/to/cifar-10-python.tar.gz "
    "dvc repro in the project's .venv; params.yaml stays as it is)"
)
CHUNK_BYTES = 1 << 20
# Client errors that say "not now" rather than "never": worth a retry like a 5xx.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})
CLIENT_ERRORS = range(400, 500)


def local_archive(data: DataParams, environ: Mapping[str, str]) -> tuple[Path, str] | None:
    """Return the local archive to read and the setting that names it, or None to download.

    ``data.archive`` first (another archive: a change of params), then the variable
    CIFAR10_ARCHIVE (a copy of the archive params.yaml describes, for offline runs).
    """
    if data.archive is not None:
        return Path(data.archive), "data.archive"
    copy = environ.get(LOCAL_COPY_VARIABLE)
    if copy:
        try:
            check_absolute(copy)
        except ValueError as error:
            raise ParamsError(f"{LOCAL_COPY_VARIABLE} = {copy!r}: {error}") from None
        return Path(copy), LOCAL_COPY_VARIABLE
    return None


def archive_identity(data: DataParams, environ: Mapping[str, str]) -> dict[str, object]:
    """Describe what tells the archive the download stage will read apart from another one.

    With ``data.md5`` the md5 pins the content. Without it a local file is known by
    what DVC's own state uses for files (size, modification time, inode): replacing
    it changes this, so the download stage runs again. A URL without an md5 cannot be
    watched offline.
    """
    if data.md5 is not None:
        return {"md5": data.md5}
    local = local_archive(data, environ)
    if local is None:
        return {"url": data.url}
    path, _ = local
    try:
        status = path.stat()
    except OSError:
        return {"path": str(path), "missing": True}
    return {
        "path": str(path),
        "bytes": status.st_size,
        "modified_ns": status.st_mtime_ns,
        "inode": status.st_ino,
    }


class ChecksumError(PipelineError):
    """The archive's md5 is not the one params.yaml expects."""


def check_md5(source: str, expected: str, got: str) -> None:
    """Raise ChecksumError unless ``got`` equals ``expected``."""
    if got != expected:
        raise ChecksumError(
            f"{source}: md5 mismatch: expected {expected} (data.md5), got {got}; nothing was "
            "kept; to use another archive, set both keys: dvc exp run -S data.archive="
            f"/absolute/path/to/it -S data.md5={got}"
        )


def use_local_archive(
    archive: Path,
    destination: Path,
    expected_md5: str | None,
    *,
    setting: str = "data.archive",
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Copy ``archive`` to ``destination`` atomically once verified; return its md5.

    A copy rather than a link, because DVC moves the output into its cache. The checks
    run on the copy, so they vouch for the bytes actually written. ``setting`` is where
    the path came from, for the messages; ``before_commit`` as for ``atomic_outputs``.
    """
    shown = f"{setting} = {str(archive)!r}"
    if archive.is_dir():
        raise PipelineError(f"{shown}: a folder, not an archive file")
    if not archive.is_file():
        problem = "not a regular file (a device, pipe or socket)" if archive.exists() else ""
        raise PipelineError(f"{shown}: {problem or 'no such file'}")
    # Refused before it is copied: the copy would take that much disk.
    if (size := archive.stat().st_size) > MAX_FILE_BYTES:
        raise PipelineError(
            f"{shown}: {size:,} bytes, more than the {MAX_FILE_BYTES >> 20} MiB a CIFAR-10 "
            "archive can be"
        )
    with atomic_outputs(destination, before_commit=before_commit) as (temporary,):
        shutil.copyfile(archive, temporary)
        md5 = file_md5(temporary)
        if expected_md5 is None:
            check_archive(temporary, name=str(archive))
        else:
            check_md5(str(archive), expected_md5, md5)
    return md5


class BoundedDownloader:
    """pooch's downloader: the body streamed with requests, at most ``max_bytes`` of it.

    What a retry cannot cure (a client error, an unknown host, a body too large) raises
    PipelineError, which pooch passes on at once; the rest raises requests' errors,
    which pooch retries.
    """

    def __init__(self, timeout: float, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes

    def __call__(self, url: str, output_file: str, pooch_: object) -> None:  # noqa: ARG002
        """Write the body at ``url`` to ``output_file``."""
        try:
            # Identity encoding: the md5 is of the file's own bytes.
            response = requests.get(
                url, headers={"Accept-Encoding": "identity"}, stream=True, timeout=self.timeout
            )
        except requests.ConnectionError as error:
            if _is_name_resolution(error):
                host = urllib3.util.parse_url(url).host
                raise PipelineError(
                    f"{url}: cannot resolve {host} (no network?); {OFFLINE_HINT}"
                ) from None
            raise
        with response:
            status = response.status_code
            if status in CLIENT_ERRORS and status not in RETRYABLE_CLIENT_STATUSES:
                raise PipelineError(
                    f"{url}: HTTP {status} {response.reason}; check data.url in params.yaml, "
                    "or set data.archive to a local copy"
                )
            response.raise_for_status()
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            if total is not None and total > self.max_bytes:
                raise self._too_large(url, f"the server announces {total:,} bytes")
            self._write(url, response, Path(output_file), total)

    def _write(self, url: str, response: requests.Response, path: Path, total: int | None) -> None:
        received = 0
        with (
            path.open("wb") as file,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="download",
                file=sys.stderr,
                disable=None,  # no bar when stderr is not a terminal (logs, CI)
            ) as progress,
        ):
            for chunk in response.iter_content(CHUNK_BYTES):
                received += len(chunk)
                if received > self.max_bytes:
                    raise self._too_large(url, "the body goes on")
                file.write(chunk)
                progress.update(len(chunk))

    def _too_large(self, url: str, problem: str) -> PipelineError:
        return PipelineError(
            f"{url}: {problem} past the {self.max_bytes >> 20} MiB a CIFAR-10 archive can be; "
            "nothing was kept; check data.url in params.yaml"
        )


def _is_name_resolution(error: BaseException) -> bool:
    """Whether the host name could not be resolved (no network): waiting will not help."""
    while error is not None:
        if isinstance(error, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def download(
    url: str,
    destination: Path,
    expected_md5: str | None,
    *,
    retries: int,
    timeout: float,
    max_bytes: int = MAX_FILE_BYTES,
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Download ``url`` to ``destination`` atomically once verified; return its md5."""
    # The params schema bounds both; pooch would make no attempt at all for retries < 0.
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    with atomic_outputs(destination, before_commit=before_commit) as (temporary,):
        # pooch streams into a temporary file of its own, in the folder it is given: one
        # named after atomic_outputs' temporary, so that what a killed run leaves there is
        # removed as a leftover when the stage runs again (cifar10/atomic.py).
        folder = temporary.with_name(f"{temporary.name}-download")
        folder.mkdir()
        try:
            _fetch(
                url, folder / destination.name, expected_md5,
                retries=retries, downloader=BoundedDownloader(timeout, max_bytes),
            )  # fmt: skip
            (folder / destination.name).rename(temporary)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if expected_md5 is not None:
            return expected_md5
        check_archive(temporary, name=url)
        return file_md5(temporary)


def _fetch(
    url: str, path: Path, expected_md5: str | None, *, retries: int, downloader: BoundedDownloader
) -> None:
    """Have pooch download ``url`` to ``path`` once its md5 (if any) matches."""
    fetcher = pooch.create(
        path=path.parent,
        base_url="",
        registry={path.name: None if expected_md5 is None else f"md5:{expected_md5}"},
        urls={path.name: url},
        retry_if_failed=retries,
    )
    try:
        fetcher.fetch(path.name, downloader=downloader)
    except requests.RequestException as error:
        raise PipelineError(
            f"{url}: download failed after {retries + 1} attempt(s) ({one_line(error)}); "
            f"{OFFLINE_HINT}"
        ) from None
    except ValueError as error:  # pooch: the hash does not match, on every attempt
        raise ChecksumError(
            f"{url}: md5 mismatch on every one of {retries + 1} attempt(s) "
            f"({one_line(error)}); nothing was kept; check data.url and data.md5"
        ) from None
