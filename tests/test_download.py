"""download stage: a real HTTP server on 127.0.0.1, in this process, serves a payload.

Each test picks how the server behaves (normal, 404, a 503 first, a body cut short,
no Range support, a body that never ends) and reads back the Range header of every
request it got.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_stage, write_params

from stages import download
from stages.cifar import MAX_FILE_BYTES, ArchiveError
from stages.cli import StageError
from stages.download import (
    LOCAL_COPY_VARIABLE,
    download_with_resume,
    partial_path,
    use_local_archive,
)
from stages.params import ParamsError
from tools.synthetic_archive import make_synthetic_archive


def small_archive() -> bytes:
    """The bytes of a small archive in the official format (60 images)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.tar.gz"
        make_synthetic_archive(path, images_per_batch=10, seed=3)
        return path.read_bytes()


PAYLOAD = small_archive()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD, usedforsecurity=False).hexdigest()
HALF = len(PAYLOAD) // 2
WRONG_MD5 = "0" * 32
# Retries cost microseconds, not the real stage's seconds.
BACKOFF = 0.001


@dataclass
class ServerState:
    """What the server does next, and the Range header (or None) of each request it got."""

    url: str = ""
    behaviour: str = "normal"
    ranges: list[str | None] = field(default_factory=list)


class PayloadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PayloadHandler)
        self.state = ServerState(url=f"http://127.0.0.1:{self.server_port}/cifar.tar.gz")


class PayloadHandler(BaseHTTPRequestHandler):
    server: PayloadServer

    def do_GET(self) -> None:
        state = self.server.state
        requested = self.headers.get("Range")
        state.ranges.append(requested)
        first = len(state.ranges) == 1
        if state.behaviour == "missing":
            self.send_error(404)
        elif state.behaviour in ("endless", "huge"):
            self._send_too_much(state.behaviour)
        elif state.behaviour == "error_once" and first:
            self.send_error(503)
        elif state.behaviour == "drop_once" and first:
            # Promise the whole payload, send half, then hang up.
            self._send_headers(200, len(PAYLOAD))
            self.wfile.write(PAYLOAD[:HALF])
        elif state.behaviour == "short_without_length" and first:
            # No Content-Length: the body ends when the connection closes, here halfway.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:HALF])
        elif requested is not None and state.behaviour == "wrong_range":
            # Partial content, but not the part asked for.
            content_range = f"bytes 0-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
            self._send_headers(206, len(PAYLOAD), {"Content-Range": content_range})
            self.wfile.write(PAYLOAD)
        elif state.behaviour == "corrupt":
            flipped = bytearray(PAYLOAD)
            flipped[HALF] ^= 1
            self._send_headers(200, len(PAYLOAD))
            self.wfile.write(bytes(flipped))
        elif requested is None or state.behaviour == "no_range":
            self._send_headers(200, len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        else:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            if start >= len(PAYLOAD):
                self._send_headers(416, 0, {"Content-Range": f"bytes */{len(PAYLOAD)}"})
            else:
                content_range = f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
                self._send_headers(206, len(PAYLOAD) - start, {"Content-Range": content_range})
                self.wfile.write(PAYLOAD[start:])

    def _send_too_much(self, behaviour: str) -> None:
        if behaviour == "huge":
            self._send_headers(200, MAX_FILE_BYTES + 1)
            return
        # No Content-Length, and zeros for as long as the client reads.
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(bytes(1 << 16))

    def _send_headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not stand between the tests and 127.0.0.1."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1")


@pytest.fixture
def server() -> Iterator[ServerState]:
    httpd = PayloadServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def fetch(
    server: ServerState,
    output: Path,
    md5: str | None = PAYLOAD_MD5,
    retries: int = 3,
    max_bytes: int = MAX_FILE_BYTES,
) -> str:
    return download_with_resume(
        server.url, output, md5, retries=retries, timeout=5, backoff_seconds=BACKOFF,
        max_bytes=max_bytes,
    )  # fmt: skip


def test_download_writes_the_payload_and_no_partial(server: ServerState, tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert not partial_path(output).exists()
    assert server.ranges == [None]


def test_md5_mismatch_is_fetched_again_once_then_keeps_nothing(
    server: ServerState, tmp_path: Path
) -> None:
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(StageError, match=f"expected {WRONG_MD5} .*got {PAYLOAD_MD5}"):
        fetch(server, output, md5=WRONG_MD5)
    # Asked for more (nothing more: 416), then for all of it again.
    assert server.ranges == [None, f"bytes={len(PAYLOAD)}-", None]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("md5", [PAYLOAD_MD5, None])
def test_body_cut_short_without_a_length_is_resumed(
    server: ServerState, tmp_path: Path, md5: str | None
) -> None:
    # The cut is invisible to HTTP; the md5, or without one the gzip trailer, reveals it.
    server.behaviour = "short_without_length"
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output, md5=md5) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == [None, f"bytes={HALF}-"]


def test_a_corrupt_download_without_md5_is_refused(server: ServerState, tmp_path: Path) -> None:
    server.behaviour = "corrupt"
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(ArchiveError) as caught:
        fetch(server, output, md5=None)
    # The URL as it is, not as a path (which would read http:/127...).
    assert str(caught.value).startswith(f"{server.url}: corrupt or truncated gzip data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("md5", [PAYLOAD_MD5, None])
def test_a_body_that_never_ends_is_cut_off_and_deleted(
    server: ServerState, tmp_path: Path, md5: str | None
) -> None:
    server.behaviour = "endless"
    output = tmp_path / "archive.tar.gz"
    bound = len(PAYLOAD) + (1 << 20)
    with pytest.raises(StageError) as caught:
        fetch(server, output, md5=md5, max_bytes=bound)
    assert str(caught.value) == (
        f"{server.url}: the body goes on past {bound >> 20} MiB, more than a CIFAR-10 archive "
        "can be; nothing was kept; check data.url in params.yaml"
    )
    assert server.ranges == [None]  # not retried
    assert list(tmp_path.iterdir()) == []


def test_a_body_announced_larger_than_an_archive_is_refused_unread(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour = "huge"
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(StageError, match=f"announces {MAX_FILE_BYTES + 1:,} bytes, more than"):
        fetch(server, output)
    assert list(tmp_path.iterdir()) == []


def test_not_found_fails_at_once(server: ServerState, tmp_path: Path) -> None:
    server.behaviour = "missing"
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(StageError, match=r"HTTP 404 .*data\.url"):
        fetch(server, output, retries=3)
    assert len(server.ranges) == 1
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retried(server: ServerState, tmp_path: Path) -> None:
    server.behaviour = "error_once"
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == [None, None]


def test_dropped_connection_resumes_with_range(server: ServerState, tmp_path: Path) -> None:
    server.behaviour = "drop_once"
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == [None, f"bytes={HALF}-"]
    assert not partial_path(output).exists()


def test_dropped_connection_with_no_retries_left_keeps_the_partial(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour = "drop_once"
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(StageError, match="after 1 attempt"):
        fetch(server, output, retries=0)
    assert not output.exists()
    assert partial_path(output).read_bytes() == PAYLOAD[:HALF]


def test_partial_of_an_earlier_run_is_resumed(server: ServerState, tmp_path: Path) -> None:
    output = tmp_path / "archive.tar.gz"
    partial_path(output).write_bytes(PAYLOAD[:1000])
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]


def test_server_without_range_support_restarts_from_zero(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour = "no_range"
    output = tmp_path / "archive.tar.gz"
    # Bytes that would corrupt the result if the full body were appended to them.
    partial_path(output).write_bytes(b"x" * 1000)
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]


def test_partial_content_of_another_range_restarts_from_zero(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour = "wrong_range"
    output = tmp_path / "archive.tar.gz"
    partial_path(output).write_bytes(PAYLOAD[:1000])
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-", None]


def test_whole_partial_left_before_the_rename_is_fetched_again(
    server: ServerState, tmp_path: Path
) -> None:
    output = tmp_path / "archive.tar.gz"
    partial_path(output).write_bytes(PAYLOAD)
    assert fetch(server, output) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-", None]


def test_partial_is_not_resumed_across_runs_without_an_md5(
    server: ServerState, tmp_path: Path
) -> None:
    output = tmp_path / "archive.tar.gz"
    partial_path(output).write_bytes(b"stale bytes of another file")
    assert fetch(server, output, md5=None) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert server.ranges == [None]


def test_an_unresolvable_host_fails_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # .invalid never resolves (RFC 6761): no network, no point in waiting and retrying.
    with pytest.raises(StageError) as caught:
        download_with_resume(
            "http://cifar.invalid/x.tar.gz", tmp_path / "x", None, retries=5, timeout=5
        )
    assert str(caught.value).startswith(
        "http://cifar.invalid/x.tar.gz: cannot resolve cifar.invalid"
    )
    assert "make repro ARCHIVE=/path/to/cifar-10-python.tar.gz" in str(caught.value)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_unreachable_server_points_to_a_local_copy(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(StageError) as caught:
        download_with_resume(
            f"http://127.0.0.1:{closed_port}/cifar.tar.gz",
            output,
            PAYLOAD_MD5,
            retries=2,
            timeout=5,
            backoff_seconds=BACKOFF,
        )
    message = str(caught.value)
    assert "after 3 attempt(s)" in message
    assert "Connection refused" in message
    assert "make repro ARCHIVE=/path/to/cifar-10-python.tar.gz" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("retries", "timeout", "backoff", "message"),
    [(-1, 5.0, 0.0, "retries"), (0, 0.0, 0.0, "timeout"), (0, 5.0, -1.0, "backoff_seconds")],
)
def test_bad_arguments_are_refused(
    tmp_path: Path, retries: int, timeout: float, backoff: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        download_with_resume(
            "http://127.0.0.1:9/x",
            tmp_path / "x",
            None,
            retries=retries,
            timeout=timeout,
            backoff_seconds=backoff,
        )


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "local" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_local_archive_with_the_right_md5_is_copied(archive: Path, tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    assert use_local_archive(archive, output, PAYLOAD_MD5) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    # A copy, not a link: DVC moves the output into its cache.
    assert not output.is_symlink()
    assert not output.samefile(archive)


def test_local_archive_with_a_wrong_md5_keeps_nothing(archive: Path, tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    with pytest.raises(StageError, match=f"expected {WRONG_MD5} .*got {PAYLOAD_MD5}"):
        use_local_archive(archive, output, WRONG_MD5)
    assert list(output.parent.iterdir()) == []


def test_missing_local_archive_or_a_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(StageError, match=f"data.archive = '{missing}': no such file"):
        use_local_archive(missing, tmp_path / "archive.tar.gz", PAYLOAD_MD5)
    with pytest.raises(StageError, match=f"data.archive = '{tmp_path}': a folder, not an archive"):
        use_local_archive(tmp_path, tmp_path / "archive.tar.gz", PAYLOAD_MD5)
    assert list(tmp_path.iterdir()) == []


def test_a_device_or_an_oversized_local_archive_is_refused_uncopied(tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    with pytest.raises(
        StageError, match=r"^data\.archive = '/dev/zero': not a regular file \(a device"
    ):
        use_local_archive(Path("/dev/zero"), output, None)
    big = tmp_path / "big.tar.gz"
    big.write_bytes(PAYLOAD)
    os.truncate(big, MAX_FILE_BYTES + 1)  # sparse: no disk taken
    with pytest.raises(StageError, match=f"{MAX_FILE_BYTES + 1:,} bytes, more than the 256 MiB"):
        use_local_archive(big, output, None)
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_a_corrupt_local_archive_without_md5_is_named_by_its_own_path(
    archive: Path, tmp_path: Path
) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    archive.write_bytes(bytes(data))
    output = tmp_path / "raw" / "archive.tar.gz"
    with pytest.raises(ArchiveError, match=f"^{archive}: corrupt or truncated gzip data"):
        use_local_archive(archive, output, None)
    assert list(output.parent.iterdir()) == []


@pytest.fixture
def run_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make main() read tmp_path/params.yaml and write tmp_path/raw/archive.tar.gz."""
    output = tmp_path / "raw" / "archive.tar.gz"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["download", "--output", str(output)])
    return output


def test_main_with_bad_params_stops_before_any_request(
    server: ServerState, tmp_path: Path, run_main: Path
) -> None:
    (tmp_path / "params.yaml").write_text(
        (write_params(tmp_path / "valid", {"data": {"url": server.url}}) / "params.yaml")
        .read_text()
        .replace("retries: 5", "retries: -1")
    )
    with pytest.raises(ParamsError, match=r"data\.retries = -1"):
        download.main()
    assert server.ranges == []
    assert not run_main.exists()


def test_main_downloads_data_url(
    server: ServerState, tmp_path: Path, run_main: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(tmp_path, {"data": {"url": server.url, "md5": PAYLOAD_MD5}})
    download.main()
    assert run_main.read_bytes() == PAYLOAD
    assert f"md5 {PAYLOAD_MD5} (matches data.md5)" in capsys.readouterr().out


def test_main_prints_the_md5_of_an_unchecked_local_archive(
    archive: Path, tmp_path: Path, run_main: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(tmp_path, {"data": {"archive": str(archive), "md5": None}})
    download.main()
    assert run_main.read_bytes() == PAYLOAD
    assert f"md5 {PAYLOAD_MD5} (data.md5 is null, so the archive's own checks passed" in (
        capsys.readouterr().out
    )


def test_main_uses_a_local_copy_of_the_archive_params_describe(
    archive: Path, tmp_path: Path, run_main: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(tmp_path, {"data": {"url": "http://cifar.invalid/x", "md5": PAYLOAD_MD5}})
    params = (tmp_path / "params.yaml").read_bytes()
    monkeypatch.setenv(LOCAL_COPY_VARIABLE, str(archive))
    download.main()
    assert run_main.read_bytes() == PAYLOAD
    assert (tmp_path / "params.yaml").read_bytes() == params


def test_a_local_copy_of_another_archive_is_refused(
    archive: Path, tmp_path: Path, run_main: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(tmp_path, {"data": {"md5": WRONG_MD5}})
    monkeypatch.setenv(LOCAL_COPY_VARIABLE, str(archive))
    with pytest.raises(StageError) as caught:
        download.main()
    assert str(caught.value) == (
        f"{archive}: md5 mismatch: expected {WRONG_MD5} (data.md5), got {PAYLOAD_MD5}; nothing "
        "was kept; to use another archive, set both keys: dvc exp run -S data.archive="
        f"/absolute/path/to/it -S data.md5={PAYLOAD_MD5}"
    )
    assert not run_main.exists()


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tar.gz"
    write_params(tmp_path, {"data": {"archive": str(missing)}})
    result = run_stage("download", ["--output", "raw/archive.tar.gz"], tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: data.archive = '{missing}': no such file\n"
    assert not (tmp_path / "raw").exists()
