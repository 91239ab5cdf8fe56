"""The download stage: a real HTTP server on 127.0.0.1, in a thread of this process.

Each test picks how the server behaves (normal, an error status, a body cut short, a
body too large) and reads back the requests it got. pooch waits 1 s before its first
retry, 2 s before the second: the tests that retry are few, and integration tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import command_environment, params_with, run_stage, write_params

from cifar10.archive import MAX_FILE_BYTES, ArchiveError
from cifar10.download import (
    LOCAL_COPY_VARIABLE,
    ChecksumError,
    archive_identity,
    download,
    local_archive,
    use_local_archive,
)
from cifar10.errors import ParamsError, PipelineError
from stages import download as download_stage
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
# The bound the tests give the downloader: far above the payload, far below the real one.
MAX_BYTES = 1 << 20
assert len(PAYLOAD) < MAX_BYTES < MAX_FILE_BYTES
OFFLINE_HINT = "make repro ARCHIVE=/path/to/cifar-10-python.tar.gz"


@dataclass
class Request:
    """What the server saw of one request."""

    range: str | None
    accept_encoding: str | None


@dataclass
class ServerState:
    """What the server does (``behaviour``, ``status``) and the requests it got."""

    url: str = ""
    behaviour: str = "normal"
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    # A folder to list as each request arrives (what the downloading client has made).
    watched: Path | None = None
    listings: list[list[str]] = field(default_factory=list)
    # What a stalled body waits for before it ends.
    release: threading.Event = field(default_factory=threading.Event)


class PayloadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PayloadHandler)
        self.state = ServerState(url=f"http://127.0.0.1:{self.server_port}/cifar.tar.gz")


class PayloadHandler(BaseHTTPRequestHandler):
    server: PayloadServer

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(
            Request(self.headers.get("Range"), self.headers.get("Accept-Encoding"))
        )
        if state.watched is not None:
            state.listings.append(sorted(path.name for path in state.watched.iterdir()))
        first = len(state.requests) == 1
        behaviour = state.behaviour
        if behaviour == "status" or (behaviour == "status_once" and first):
            self.send_error(state.status)
        elif behaviour == "stall_once" and first:
            # Half the payload, then nothing until the test is over.
            self._send_headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:HALF])
            self.wfile.flush()
            state.release.wait(timeout=60)
        elif behaviour == "drop_once" and first:
            # Promise the whole payload, send half, then hang up.
            self._send_headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:HALF])
        elif behaviour == "short_once_without_length" and first:
            # No Content-Length: the body ends when the connection closes, here halfway.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:HALF])
        elif behaviour == "corrupt":
            flipped = bytearray(PAYLOAD)
            flipped[HALF] ^= 1
            self._send_headers(len(PAYLOAD))
            self.wfile.write(bytes(flipped))
        elif behaviour == "announced_too_large":
            self._send_headers(2 * MAX_BYTES)
        elif behaviour == "endless":
            # No Content-Length, and zeros for as long as the client reads.
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(bytes(1 << 16))
        else:
            self._send_headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD)

    def _send_headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not stand between the tests and the hosts they ask."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
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
        httpd.state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def fetch(
    server: ServerState,
    output: Path,
    md5: str | None = PAYLOAD_MD5,
    retries: int = 0,
    max_bytes: int = MAX_BYTES,
) -> str:
    return download(server.url, output, md5, retries=retries, timeout=5, max_bytes=max_bytes)


def test_download_writes_the_payload_and_nothing_else(server: ServerState, tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    assert fetch(server, output, retries=3) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert list(tmp_path.rglob("*")) == [output.parent, output]
    # One request, for the file's own bytes (its md5 is the archive's).
    assert server.requests == [Request(range=None, accept_encoding="identity")]


def test_the_download_in_progress_is_a_temporary_output(
    server: ServerState, tmp_path: Path
) -> None:
    # pooch's own temporary file included: named so, a killed run's is removed as a
    # leftover when the stage runs again (cifar10/atomic.py).
    output = tmp_path / "archive.tar.gz"
    server.watched = tmp_path
    fetch(server, output)
    [listing] = server.listings
    assert listing
    assert all(name.startswith(".archive.tar.gz.tmp-") for name in listing), listing
    assert list(tmp_path.iterdir()) == [output]


def test_an_md5_mismatch_keeps_nothing(server: ServerState, tmp_path: Path) -> None:
    output = tmp_path / "archive.tar.gz"
    with pytest.raises(ChecksumError) as caught:
        fetch(server, output, md5=WRONG_MD5)
    message = str(caught.value)
    assert message.startswith(f"{server.url}: md5 mismatch on every one of 1 attempt(s)")
    assert WRONG_MD5 in message  # pooch's words: "expected md5:... but got ..."
    assert PAYLOAD_MD5 in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_without_an_md5_the_archive_passes_its_own_checks(
    server: ServerState, tmp_path: Path
) -> None:
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output, md5=None) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD


@pytest.mark.parametrize("behaviour", ["corrupt", "short_once_without_length"])
def test_a_damaged_download_without_an_md5_is_refused_by_the_archive_checks(
    server: ServerState, tmp_path: Path, behaviour: str
) -> None:
    # A body cut short without a Content-Length is invisible to HTTP: the gzip trailer
    # reveals it; a changed byte, the gzip CRC. Neither is fetched again.
    server.behaviour = behaviour
    with pytest.raises(ArchiveError) as caught:
        fetch(server, tmp_path / "archive.tar.gz", md5=None, retries=3)
    # The URL as it is, not as a path (which would read http:/127...).
    assert str(caught.value).startswith(f"{server.url}: corrupt or truncated gzip data")
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("md5", [PAYLOAD_MD5, None])
@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [
        ("announced_too_large", f"the server announces {2 * MAX_BYTES:,} bytes"),
        ("endless", "the body goes on"),
    ],
)
def test_a_body_larger_than_an_archive_is_refused_and_deleted(
    server: ServerState, tmp_path: Path, behaviour: str, problem: str, md5: str | None
) -> None:
    server.behaviour = behaviour
    with pytest.raises(PipelineError) as caught:
        fetch(server, tmp_path / "archive.tar.gz", md5=md5, retries=3)
    assert str(caught.value) == (
        f"{server.url}: {problem} past the 1 MiB a CIFAR-10 archive can be; nothing was kept; "
        "check data.url in params.yaml"
    )
    assert len(server.requests) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("status", "reason"), [(404, "Not Found"), (403, "Forbidden")])
def test_a_client_error_fails_at_once(
    server: ServerState, tmp_path: Path, status: int, reason: str
) -> None:
    server.behaviour, server.status = "status", status
    with pytest.raises(PipelineError) as caught:
        fetch(server, tmp_path / "archive.tar.gz", retries=3)
    assert str(caught.value).startswith(f"{server.url}: HTTP {status} {reason}; check data.url")
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unresolvable_host_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # .invalid never resolves (RFC 6761): no network, no point in waiting and retrying.
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def counting_getaddrinfo(host: object, *arguments: object, **keywords: object) -> object:
        lookups.append(host)
        return real_getaddrinfo(host, *arguments, **keywords)

    monkeypatch.setattr(socket, "getaddrinfo", counting_getaddrinfo)
    with pytest.raises(PipelineError) as caught:
        download("http://cifar.invalid/x.tar.gz", tmp_path / "x", None, retries=5, timeout=5)
    message = str(caught.value)
    assert message.startswith("http://cifar.invalid/x.tar.gz: cannot resolve cifar.invalid")
    assert OFFLINE_HINT in message
    assert lookups == ["cifar.invalid"]  # asked once: not retried
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("retries", "timeout", "message"), [(-1, 5.0, "retries"), (0, 0.0, "timeout")]
)
def test_bad_arguments_are_refused(
    tmp_path: Path, retries: int, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        download("http://127.0.0.1:9/x", tmp_path / "x", None, retries=retries, timeout=timeout)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("status", [503, 408, 429])
def test_a_server_error_or_a_not_now_is_retried(
    server: ServerState, tmp_path: Path, status: int
) -> None:
    server.behaviour, server.status = "status_once", status
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output, retries=1) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert list(tmp_path.iterdir()) == [output]


@pytest.mark.integration
def test_a_server_error_on_every_attempt_fails_naming_them(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour, server.status = "status", 503
    with pytest.raises(PipelineError) as caught:
        fetch(server, tmp_path / "archive.tar.gz", retries=1)
    message = str(caught.value)
    assert message.startswith(f"{server.url}: download failed after 2 attempt(s) (503 Server")
    assert OFFLINE_HINT in message
    assert len(server.requests) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("behaviour", ["drop_once", "short_once_without_length"])
def test_a_body_cut_short_is_fetched_again_from_the_start(
    server: ServerState, tmp_path: Path, behaviour: str
) -> None:
    # drop_once: the connection ends before the Content-Length; short_once_without_length:
    # no Content-Length, so the md5 reveals the cut. No resume by Range: all of it again.
    server.behaviour = behaviour
    output = tmp_path / "archive.tar.gz"
    assert fetch(server, output, retries=1) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    assert [request.range for request in server.requests] == [None, None]
    assert list(tmp_path.iterdir()) == [output]


@pytest.mark.integration
def test_an_unreachable_server_is_retried_then_points_to_a_local_copy(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(PipelineError) as caught:
        download(
            f"http://127.0.0.1:{closed_port}/cifar.tar.gz",
            tmp_path / "archive.tar.gz",
            PAYLOAD_MD5,
            retries=1,
            timeout=5,
        )
    message = str(caught.value)
    assert "download failed after 2 attempt(s)" in message
    assert "Connection refused" in message
    assert OFFLINE_HINT in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_what_a_killed_download_left_goes_when_the_stage_runs_again(
    server: ServerState, tmp_path: Path
) -> None:
    server.behaviour = "stall_once"
    write_params(
        tmp_path, {"data": {"url": server.url, "md5": PAYLOAD_MD5, "archive": None, "retries": 0}}
    )
    arguments = ["--output", "data/archive.tar.gz"]
    process = subprocess.Popen(
        [sys.executable, "-m", "stages", "download", *arguments],
        cwd=tmp_path,
        env=command_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        # pooch's temporary file, made before the body is read, inside a temporary folder,
        # and the request at the server (the file can come first: killed then, the next
        # run's request would be the one that stalls).
        while not (list((tmp_path / "data").glob(".archive.tar.gz.tmp-*/*")) and server.requests):
            assert process.poll() is None, "the download ended before it was killed"
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()
    assert list((tmp_path / "data").iterdir()) != []
    run_stage("download", arguments, tmp_path)
    assert (tmp_path / "data" / "archive.tar.gz").read_bytes() == PAYLOAD
    assert [path.name for path in (tmp_path / "data").iterdir()] == ["archive.tar.gz"]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "local" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_a_local_archive_with_the_right_md5_is_copied(archive: Path, tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    assert use_local_archive(archive, output, PAYLOAD_MD5) == PAYLOAD_MD5
    assert output.read_bytes() == PAYLOAD
    # A copy, not a link: DVC moves the output into its cache.
    assert not output.is_symlink()
    assert not output.samefile(archive)
    assert list(output.parent.iterdir()) == [output]


def test_a_local_archive_with_a_wrong_md5_keeps_nothing_and_names_the_md5_to_set(
    archive: Path, tmp_path: Path
) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    with pytest.raises(ChecksumError) as caught:
        use_local_archive(archive, output, WRONG_MD5)
    message = str(caught.value)
    assert message.startswith(
        f"{archive}: md5 mismatch: expected {WRONG_MD5} (data.md5), got {PAYLOAD_MD5}"
    )
    assert message.endswith(f"-S data.archive=/absolute/path/to/it -S data.md5={PAYLOAD_MD5}")
    assert list(output.parent.iterdir()) == []


def test_a_missing_local_archive_or_a_folder_is_named_by_its_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(PipelineError, match=rf"^data\.archive = '{missing}': no such file$"):
        use_local_archive(missing, tmp_path / "archive.tar.gz", PAYLOAD_MD5)
    with pytest.raises(PipelineError, match=f"^{LOCAL_COPY_VARIABLE} = '{missing}': no such"):
        use_local_archive(
            missing, tmp_path / "archive.tar.gz", PAYLOAD_MD5, setting=LOCAL_COPY_VARIABLE
        )
    with pytest.raises(
        PipelineError, match=f"data.archive = '{tmp_path}': a folder, not an archive"
    ):
        use_local_archive(tmp_path, tmp_path / "archive.tar.gz", PAYLOAD_MD5)
    assert list(tmp_path.iterdir()) == []


def test_a_device_or_an_oversized_local_archive_is_refused_uncopied(tmp_path: Path) -> None:
    output = tmp_path / "raw" / "archive.tar.gz"
    with pytest.raises(
        PipelineError, match=r"^data\.archive = '/dev/zero': not a regular file \(a device"
    ):
        use_local_archive(Path("/dev/zero"), output, None)
    big = tmp_path / "big.tar.gz"
    big.write_bytes(PAYLOAD)
    os.truncate(big, MAX_FILE_BYTES + 1)  # sparse: no disk taken
    with pytest.raises(PipelineError, match=f"{MAX_FILE_BYTES + 1:,} bytes, more than the 256 MiB"):
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


def test_the_local_archive_is_data_archive_first_then_the_variable(tmp_path: Path) -> None:
    mine, copy = str(tmp_path / "mine.tar.gz"), str(tmp_path / "copy.tar.gz")
    chosen = params_with({"data": {"archive": mine}}).data
    assert local_archive(chosen, {LOCAL_COPY_VARIABLE: copy}) == (Path(mine), "data.archive")
    official = params_with({"data": {"archive": None}}).data
    assert local_archive(official, {LOCAL_COPY_VARIABLE: copy}) == (
        Path(copy),
        LOCAL_COPY_VARIABLE,
    )
    assert local_archive(official, {}) is None
    assert local_archive(official, {LOCAL_COPY_VARIABLE: ""}) is None
    with pytest.raises(ParamsError, match=rf"^{LOCAL_COPY_VARIABLE} = 'x\.tar\.gz': a relative"):
        local_archive(official, {LOCAL_COPY_VARIABLE: "x.tar.gz"})


def test_the_archive_is_identified_by_md5_or_by_the_local_files_state(tmp_path: Path) -> None:
    archive = tmp_path / "archive.tar.gz"
    archive.write_bytes(b"first")
    pinned = params_with({"data": {"md5": PAYLOAD_MD5, "archive": None}}).data
    assert archive_identity(pinned, {}) == {"md5": PAYLOAD_MD5}
    assert archive_identity(pinned, {LOCAL_COPY_VARIABLE: str(archive)}) == {"md5": PAYLOAD_MD5}

    unpinned = params_with({"data": {"md5": None, "archive": str(archive)}}).data
    before = archive_identity(unpinned, {})
    assert before["path"] == str(archive)
    assert before == archive_identity(unpinned, {})
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"other")
    replacement.replace(archive)  # replaced in place: same path, another file
    assert archive_identity(unpinned, {}) != before
    archive.unlink()
    assert archive_identity(unpinned, {}) == {"path": str(archive), "missing": True}

    from_url = params_with({"data": {"md5": None, "archive": None}}).data
    assert archive_identity(from_url, {}) == {"url": from_url.url}
    assert archive_identity(from_url, {LOCAL_COPY_VARIABLE: str(replacement)})["path"] == str(
        replacement
    )
    with pytest.raises(ParamsError, match=rf"{LOCAL_COPY_VARIABLE} = 'x.tar.gz': a relative"):
        archive_identity(from_url, {LOCAL_COPY_VARIABLE: "x.tar.gz"})


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run main() in tmp_path (its params.yaml); return where it writes the archive."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(LOCAL_COPY_VARIABLE, raising=False)
    return tmp_path / "raw" / "archive.tar.gz"


def run_main(output: Path) -> None:
    download_stage.main(["--output", str(output)])


def test_main_with_bad_params_stops_before_any_request(
    server: ServerState, tmp_path: Path, in_project: Path
) -> None:
    write_params(tmp_path, {"data": {"url": server.url, "archive": None}})
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("retries: ", "retries: -1 #"))
    with pytest.raises(ParamsError, match=r"data\.retries = -1"):
        run_main(in_project)
    assert server.requests == []
    assert not in_project.exists()


def test_main_downloads_data_url(
    server: ServerState, tmp_path: Path, in_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(tmp_path, {"data": {"url": server.url, "md5": PAYLOAD_MD5, "archive": None}})
    run_main(in_project)
    assert in_project.read_bytes() == PAYLOAD
    assert f"md5 {PAYLOAD_MD5} (matches data.md5)" in capsys.readouterr().out


def test_main_prints_the_md5_of_an_unchecked_local_archive(
    archive: Path, tmp_path: Path, in_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(tmp_path, {"data": {"archive": str(archive), "md5": None}})
    run_main(in_project)
    assert in_project.read_bytes() == PAYLOAD
    assert f"md5 {PAYLOAD_MD5} (data.md5 is null, so the archive's own checks passed" in (
        capsys.readouterr().out
    )


def test_main_uses_a_local_copy_of_the_archive_params_describe(
    archive: Path, tmp_path: Path, in_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = {"url": "http://cifar.invalid/x", "md5": PAYLOAD_MD5, "archive": None}
    write_params(tmp_path, {"data": changes})
    params = (tmp_path / "params.yaml").read_bytes()
    monkeypatch.setenv(LOCAL_COPY_VARIABLE, str(archive))
    run_main(in_project)
    assert in_project.read_bytes() == PAYLOAD
    assert (tmp_path / "params.yaml").read_bytes() == params


def test_main_refuses_a_local_copy_of_another_archive(
    archive: Path, tmp_path: Path, in_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(tmp_path, {"data": {"md5": WRONG_MD5, "archive": None}})
    monkeypatch.setenv(LOCAL_COPY_VARIABLE, str(archive))
    with pytest.raises(ChecksumError) as caught:
        run_main(in_project)
    message = str(caught.value)
    assert message.startswith(
        f"{archive}: md5 mismatch: expected {WRONG_MD5} (data.md5), got {PAYLOAD_MD5}"
    )
    assert message.endswith(f"-S data.md5={PAYLOAD_MD5}")
    assert not in_project.exists()


@pytest.mark.integration
def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tar.gz"
    write_params(tmp_path, {"data": {"archive": str(missing)}})
    result = run_stage("download", ["--output", "raw/archive.tar.gz"], tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: data.archive = '{missing}': no such file\n"
    assert not (tmp_path / "raw").exists()
