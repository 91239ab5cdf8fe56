"""download stage: fetch the CIFAR-10 archive, or verify a local copy, and check it.

Online, the archive streams into ``<output>.part`` (with a progress bar, retries with
exponential back-off and resume by HTTP Range) and is renamed to ``<output>`` only once
it is verified, so a failed or interrupted run never leaves a file that looks complete.
An md5 (``data.md5``) vouches for the bytes; without one, the archive's own checks must
pass (gzip CRC and length, tar headers, the CIFAR-10 members). A body larger than an
archive can be (stages/cifar.py's MAX_FILE_BYTES), announced or sent, is refused and
its bytes deleted, so a server cannot fill the disk.

Offline, a local copy is verified and copied: ``CIFAR10_ARCHIVE=/path/to/archive`` in
the environment for a copy of the archive params.yaml describes (params.yaml, and so
the pipeline's state, stays as it is), or ``data.archive`` in params.yaml for another
archive (a change of data, so an experiment of its own).
"""

from __future__ import annotations

from stages.start import start_command

if __name__ == "__main__":
    start_command()  # before the imports below

import argparse
import functools
import hashlib
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from stages.atomic import atomic_outputs
from stages.cifar import MAX_FILE_BYTES, check_archive, file_md5
from stages.cli import StageError, run_stage
from stages.params import LOCAL_COPY_VARIABLE, local_archive, read_params_file

# Named, not __name__: run with -m, the module is __main__.
logger = logging.getLogger("stages.download")

CHUNK_BYTES = 1 << 20
DEFAULT_BACKOFF_SECONDS = 1.0
# Client errors that say "not now" rather than "never": worth a retry like a 5xx.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})
CLIENT_ERRORS = range(400, 500)
OFFLINE_HINT = (
    "offline, give a local copy of the archive: make repro ARCHIVE=/path/to/"
    f"cifar-10-python.tar.gz (which runs {LOCAL_COPY_VARIABLE}=/path/to/cifar-10-python.tar.gz "
    "dvc repro in the project's .venv; params.yaml stays as it is)"
)
# A body can end early without the server saying so (no Content-Length): resume it, or
# fetch it again, once before giving up on an archive that fails its checks.
VERIFICATION_ATTEMPTS = 2

_new_md5 = functools.partial(hashlib.md5, usedforsecurity=False)


class ChecksumError(StageError):
    """The archive's md5 is not the one params.yaml expects."""


def partial_path(destination: Path) -> Path:
    """Return where the download of ``destination`` collects its bytes before the rename."""
    return destination.with_name(f"{destination.name}.part")


def check_md5(source: str, expected: str | None, got: str) -> None:
    """Raise ChecksumError unless ``got`` equals ``expected`` (None skips the check)."""
    if expected is not None and got != expected:
        raise ChecksumError(
            f"{source}: md5 mismatch: expected {expected} (data.md5), got {got}; nothing was "
            "kept; to use another archive, set both keys: dvc exp run -S data.archive="
            f"/absolute/path/to/it -S data.md5={got}"
        )


def verify(path: Path, source: str, expected_md5: str | None, md5: str) -> None:
    """Check the bytes at ``path`` by ``expected_md5``, or by the archive's own checks."""
    if expected_md5 is not None:
        check_md5(source, expected_md5, md5)
    else:
        check_archive(path, name=source)


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
    if archive.is_dir():
        raise StageError(f"{setting} = {str(archive)!r}: a folder, not an archive file")
    if not archive.is_file():
        problem = "not a regular file (a device, pipe or socket)" if archive.exists() else ""
        raise StageError(f"{setting} = {str(archive)!r}: {problem or 'no such file'}")
    # Refused before it is copied: the copy would take that much disk.
    if archive.stat().st_size > MAX_FILE_BYTES:
        raise StageError(
            f"{setting} = {str(archive)!r}: {archive.stat().st_size:,} bytes, more than the "
            f"{MAX_FILE_BYTES >> 20} MiB a CIFAR-10 archive can be"
        )
    with atomic_outputs(destination, before_commit=before_commit) as (temporary,):
        shutil.copyfile(archive, temporary)
        md5 = file_md5(temporary)
        verify(temporary, str(archive), expected_md5, md5)
    return md5


def _causes(error: BaseException) -> list[BaseException]:
    """List the error and what caused it, innermost last."""
    chain = [error]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(inner)
    return chain


def _innermost_reason(error: BaseException) -> str:
    """Describe the root cause ("Connection refused"), not requests' and urllib3's wrappers."""
    cause = _causes(error)[-1]
    return f"{type(cause).__name__}: {cause}".replace("\n", " ")


def _is_name_resolution(error: BaseException) -> bool:
    """Whether the host name could not be resolved: no network, waiting will not help."""
    return any(
        isinstance(cause, (socket.gaierror, urllib3.exceptions.NameResolutionError))
        for cause in _causes(error)
    )


def _resumes_at(response: requests.Response, offset: int) -> bool:
    """Whether ``response`` is the rest of the file from byte ``offset`` on."""
    return response.status_code == requests.codes.partial_content and response.headers.get(
        "Content-Range", ""
    ).startswith(f"bytes {offset}-")


def _too_large(url: str, partial: Path, problem: str) -> StageError:
    """Delete ``partial`` and build the error for a body larger than an archive can be."""
    partial.unlink(missing_ok=True)
    return StageError(f"{url}: {problem}; nothing was kept; check data.url in params.yaml")


def _fetch_once(
    session: requests.Session, url: str, partial: Path, timeout: float, max_bytes: int
) -> str:
    """Make one request, appending to ``partial`` if it can resume; return its whole md5.

    Raises ``requests.RequestException`` or ``urllib3.exceptions.HTTPError`` (errors while
    reading the body) for what a retry may cure, and StageError for what it will not: a
    client error, or a body of more than ``max_bytes`` in all (then ``partial`` is deleted).
    """
    offset = partial.stat().st_size if partial.exists() else 0
    # Identity encoding: Range offsets and the md5 are about the file's own bytes.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if offset and (
            status == requests.codes.requested_range_not_satisfiable
            or (status == requests.codes.partial_content and not _resumes_at(response, offset))
        ):
            # The partial cannot be continued (it may already be whole, from a run killed
            # before the rename): start again from zero.
            response.close()
            partial.unlink()
            return _fetch_once(session, url, partial, timeout, max_bytes)
        if status in CLIENT_ERRORS and status not in RETRYABLE_CLIENT_STATUSES:
            raise StageError(
                f"{url}: HTTP {status} {response.reason}; check data.url in params.yaml, "
                "or set data.archive to a local copy"
            )
        response.raise_for_status()

        resuming = bool(offset) and _resumes_at(response, offset)
        if resuming:
            with partial.open("rb") as existing:
                digest = hashlib.file_digest(existing, _new_md5)
        else:
            # A 200 answer to a Range request: the server cannot resume, the body is all.
            offset, digest = 0, _new_md5()
        length = response.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else None
        if total is not None and total > max_bytes:
            raise _too_large(
                url,
                partial,
                f"the server announces {total:,} bytes, more than the {max_bytes >> 20} MiB a "
                "CIFAR-10 archive can be",
            )
        received = offset
        with (
            partial.open("ab" if resuming else "wb") as file,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=partial.name,
                file=sys.stderr,
                disable=None,  # no bar when stderr is not a terminal (logs, CI)
            ) as progress,
        ):
            # read1 hands over bytes as they arrive, so a body cut short of its
            # Content-Length (urllib3 raises then) leaves all it delivered in the partial;
            # iter_content would drop its half-filled chunk. No decoding: the file's bytes.
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                received += len(chunk)
                if received > max_bytes:
                    break
                digest.update(chunk)
                file.write(chunk)
                progress.update(len(chunk))
        if received > max_bytes:
            raise _too_large(
                url,
                partial,
                f"the body goes on past {max_bytes >> 20} MiB, more than a CIFAR-10 archive can be",
            )
    return digest.hexdigest()


def _fetch_with_retries(
    url: str, partial: Path, retries: int, timeout: float, backoff_seconds: float, *, max_bytes: int
) -> str:
    """Fetch ``url`` into ``partial``, retrying what may pass with exponential back-off."""
    attempts = retries + 1
    reason = ""
    with requests.Session() as session:
        for attempt in range(attempts):
            if attempt:
                delay = backoff_seconds * 2 ** (attempt - 1)
                logger.warning(
                    "attempt %d of %d failed (%s); retrying in %.3g s",
                    attempt,
                    attempts,
                    reason,
                    delay,
                )
                time.sleep(delay)
            try:
                return _fetch_once(session, url, partial, timeout, max_bytes)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                reason = _innermost_reason(error)
                if _is_name_resolution(error):
                    host = urllib3.util.parse_url(url).host
                    raise StageError(
                        f"{url}: cannot resolve {host} (no network?); {OFFLINE_HINT}"
                    ) from None
    kept = f"; {partial} keeps the bytes so far" if partial.exists() else ""
    raise StageError(
        f"{url}: download failed after {attempts} attempt(s) ({reason}){kept}; {OFFLINE_HINT}"
    )


def download_with_resume(
    url: str,
    destination: Path,
    expected_md5: str | None,
    *,
    retries: int,
    timeout: float,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    max_bytes: int = MAX_FILE_BYTES,
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Download ``url`` to ``destination`` and return its md5.

    Bytes collect in ``partial_path(destination)``, which a later call resumes; they are
    renamed to ``destination`` only once verified: by ``expected_md5``, or without one by
    the archive's own checks. Network errors and 5xx answers are retried ``retries``
    times, waiting ``backoff_seconds`` then twice as long each time; other 4xx answers and
    unresolvable host names fail at once. Bytes that fail verification are resumed (a
    body cut short) or fetched again once; if they fail again, they are deleted. A body
    of more than ``max_bytes``, announced or sent, is refused and its bytes deleted.
    ``before_commit`` runs before the rename, as for ``atomic_outputs``.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if backoff_seconds < 0:
        raise ValueError(f"backoff_seconds must be >= 0, got {backoff_seconds}")
    partial = partial_path(destination)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if expected_md5 is None:
        # Without an md5 nothing would catch a stale partial of another file (data.url
        # changed since): resume only within this run.
        partial.unlink(missing_ok=True)
    for attempt in range(1, VERIFICATION_ATTEMPTS + 1):
        md5 = _fetch_with_retries(
            url, partial, retries, timeout, backoff_seconds, max_bytes=max_bytes
        )
        try:
            verify(partial, url, expected_md5, md5)
            break
        except StageError as error:
            if attempt == VERIFICATION_ATTEMPTS:
                partial.unlink()
                raise
            logger.warning("%s; asking for the rest, or all of it again", error)
    if before_commit is not None:
        before_commit()
    partial.replace(destination)
    return md5


def main() -> None:
    """Fetch or copy the archive to ``--output``, as params.yaml's data section says."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="archive destination")
    arguments = parser.parse_args()
    params_file = read_params_file()
    params = params_file.params.data

    local = local_archive(params, os.environ)
    if local is not None:
        path, setting = local
        source = str(path)
        md5 = use_local_archive(
            path,
            arguments.output,
            params.md5,
            setting=setting,
            before_commit=params_file.check_unchanged,
        )
    else:
        source = params.url
        md5 = download_with_resume(
            params.url,
            arguments.output,
            params.md5,
            retries=params.retries,
            timeout=params.timeout_seconds,
            before_commit=params_file.check_unchanged,
        )
    check = (
        "matches data.md5"
        if params.md5 is not None
        else "data.md5 is null, so the archive's own checks passed; set it to this value"
    )
    print(f"wrote {arguments.output} from {source}: md5 {md5} ({check})")


if __name__ == "__main__":
    run_stage(main)
