"""Reading CIFAR-10 archives: the format, its validation, refusing unsafe input in bounded memory.

Every fault gives one ArchiveError line. The plain format checks are unit tests; the
hostile inputs of issue 23 measured in a child process (its peak resident memory, its
address space capped at 1 GiB) and the property tests (hypothesis) are integration tests.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import pickletools
import struct
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers import AllocationPeak, peak_memory_mib
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cifar10.archive import (
    CLASS_NAMES,
    FOLDER,
    MAX_ARCHIVE_BYTES,
    MAX_FILE_BYTES,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_PICKLE_OPCODES,
    META_FILE,
    TEST_BATCH,
    TRAIN_BATCHES,
    ArchiveError,
    CifarArchive,
    file_md5,
    interleaved_to_planar,
    load_cifar_archive,
    planar_to_interleaved,
    restricted_loads,
)
from cifar10.errors import PipelineError
from tools.synthetic_archive import make_synthetic_archive, synthetic_members, write_archive

# What a child process that reads an archive may use at its peak: the interpreter,
# numpy and the reader's buffers (about 40 MiB), not what the file announces or holds.
CHILD_PEAK_MIB = 100


def read_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        return {
            member.name.rsplit("/", 1)[1]: archive.extractfile(member).read()
            for member in archive
            if member.isfile()
        }


def tar_gz(entries: Sequence[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A tar.gz of the given headers and contents, as they are."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def entries_of(members: Mapping[str, bytes], prefix: str = "") -> list:
    return [file_entry(f"{prefix}{FOLDER}/{name}", data) for name, data in members.items()]


def measure_load(path: Path) -> tuple[str, float]:
    """Load ``path`` in a child process: what it printed (the error, if any) and its peak."""
    return peak_memory_mib(f"""
from pathlib import Path
from cifar10.archive import ArchiveError, load_cifar_archive
try:
    load_cifar_archive(Path({str(path)!r}))
except ArchiveError as error:
    print(error)
""")


def test_synthetic_archive_round_trips(tiny_archive: Path) -> None:
    archive = load_cifar_archive(tiny_archive)
    assert archive.dev.images.shape == (200, 3072)
    assert archive.dev.images.dtype == np.uint8
    assert archive.test.images.shape == (40, 3072)
    assert archive.class_names == CLASS_NAMES
    # Labels are balanced across the ten classes.
    assert np.bincount(archive.dev.labels).tolist() == [20] * 10


def test_synthetic_archive_is_reproducible(tmp_path: Path, tiny_archive: Path) -> None:
    again = tmp_path / "again.tar.gz"
    make_synthetic_archive(again, images_per_batch=40, seed=0)
    assert file_md5(again) == file_md5(tiny_archive)
    other_seed = tmp_path / "other.tar.gz"
    make_synthetic_archive(other_seed, images_per_batch=40, seed=1)
    assert file_md5(other_seed) != file_md5(tiny_archive)


def test_pixels_are_reordered_like_keras_cifar10_loader() -> None:
    # Keras' loader: reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1); pixel (row, col, channel).
    planar = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072)
    interleaved = planar_to_interleaved(planar)
    row, column, channel = 5, 7, 2
    assert (
        interleaved[1, (row * 32 + column) * 3 + channel]
        == planar[1, channel * 1024 + row * 32 + column]
    )
    np.testing.assert_array_equal(interleaved_to_planar(interleaved), planar)


def test_file_md5_matches_hashlib_reference(tmp_path: Path) -> None:
    path = tmp_path / "bytes"
    path.write_bytes(b"abc")
    assert file_md5(path) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321 test vector


class CallsSystem:
    """A pickle payload that would run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, tiny_archive: Path) -> None:
    marker = tmp_path / "pwned"
    members = read_members(tiny_archive)
    members[TRAIN_BATCHES[2]] = pickle.dumps({b"data": CallsSystem(marker)}, protocol=2)
    evil = tmp_path / "evil.tar.gz"
    write_archive(evil, members)
    with pytest.raises(ArchiveError, match=r"refusing to load posix\.system"):
        load_cifar_archive(evil)
    assert not marker.exists()


def nested_hex_pickle(depth: int) -> bytes:
    """``depth`` nested _codecs.encode(..., 'hex') calls on b'x': each doubles its input."""
    encode = b"h\x00"  # BINGET 0: _codecs.encode, memoized below
    hex_call = b"X\x03\x00\x00\x00hex\x86R"  # BINUNICODE 'hex', TUPLE2, REDUCE
    return (
        b"\x80\x02c_codecs\nencode\nq\x000" + encode * depth + b"C\x01x" + hex_call * depth + b"."
    )


@pytest.mark.integration
def test_nested_hex_codecs_pickle_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # 30 calls would make 2^30 bytes and, with the copies on the way, gigabytes.
    bomb = nested_hex_pickle(30)
    assert len(bomb) < 500
    members = synthetic_members(1)
    members[TRAIN_BATCHES[0]] = bomb
    path = tmp_path / "hex.tar.gz"
    write_archive(path, members)
    output, peak = measure_load(path)
    assert "_codecs.encode(..., 'hex') is not part of the CIFAR-10 format" in output
    assert peak < CHILD_PEAK_MIB, peak


@pytest.mark.integration
def test_a_memo_index_beyond_the_format_is_refused_before_allocating(tmp_path: Path) -> None:
    # An 11-byte pickle: an empty list stored at memo index 2^26, for which the C
    # unpickler would allocate (and zero) a 1 GiB memo.
    bomb = b"\x80\x02]r" + struct.pack("<I", 1 << 26) + b"."
    members = synthetic_members(1)
    members[TEST_BATCH] = bomb
    path = tmp_path / "memo.tar.gz"
    write_archive(path, members)
    output, peak = measure_load(path)
    assert f"memo index 67,108,864 at byte 3, beyond {MAX_PICKLE_OPCODES:,}" in output
    assert peak < CHILD_PEAK_MIB, peak


def reencoding_pickle(length: int, calls: int) -> bytes:
    """A list of ``calls`` _codecs.encode(s, 'latin1') of one memoized string of ``length``."""
    text = b"X" + struct.pack("<I", length) + b"a" * length
    call = b"h\x00h\x01X\x06\x00\x00\x00latin1\x86R"
    return b"\x80\x02c_codecs\nencode\nq\x00" + text + b"q\x01(" + call * calls + b"l."


@pytest.mark.parametrize(
    ("pickled", "message"),
    [
        # 1 TiB announced for bytes that are not there: the C unpickler allocates first.
        (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc.", "expected 1099511627776 bytes"),
        # One string encoded again and again: a copy each time.
        (reencoding_pickle(1000, 100), "_codecs.encode makes more bytes than the pickle holds"),
        (b"\x80\x02c_codecs\nencode\nC\x01xX\x03\x00\x00\x00hex\x86R.", "encode(..., 'hex')"),
        (pickle.dumps(list(range(MAX_PICKLE_OPCODES)), protocol=2), "more than 200,000 opcodes"),
        (pickle.dumps({b"a": 1}, protocol=2) + b"more", "4 bytes after the pickle's end"),
        (
            pickle.dumps(np.zeros(3, np.float32), protocol=2).replace(b"f4", b"O8"),
            "numpy.dtype('O8', False, True) is not part of the CIFAR-10 format",
        ),
        (  # a shape of 2^40 bytes around 4 bytes
            pickle.dumps(np.zeros((2, 2), np.uint8), protocol=2).replace(
                b"K\x02K\x02\x86", b"J\x00\x00\x10\x00J\x00\x00\x10\x00\x86"
            ),
            "an array of shape (1048576, 1048576) and type uint8 cannot be 4 bytes",
        ),
        (pickle.dumps(np.zeros((1, 1, 1), np.uint8)), "array shape (1, 1, 1): not 1 to 2 lengths"),
    ],
)
def test_pickles_beyond_the_format_are_refused_before_allocating(
    pickled: bytes, message: str
) -> None:
    with AllocationPeak() as peak, pytest.raises(pickle.UnpicklingError) as caught:
        restricted_loads(pickled)
    assert message in str(caught.value)
    assert peak.bytes < 2 * len(pickled) + (1 << 20)


@pytest.mark.integration
@settings(max_examples=60, deadline=None)
@given(
    array=arrays(
        st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]),
        st.tuples(st.integers(0, 4), st.integers(0, 5)) | st.tuples(st.integers(0, 6)),
    ),
    protocol=st.integers(2, 5),
    fortran=st.booleans(),
)
def test_arrays_of_every_protocol_are_read_exactly(
    array: np.ndarray, protocol: int, fortran: bool
) -> None:
    if fortran:
        array = np.asfortranarray(array)
    content = restricted_loads(pickle.dumps({b"data": array, b"name": b"x"}, protocol=protocol))
    assert content[b"name"] == b"x"
    read = content[b"data"].array
    assert read.dtype == array.dtype
    np.testing.assert_array_equal(read, array)


def python2_batch(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the official archive's were: Python 2 str, numpy.core, 0/1."""

    def string(data: bytes) -> bytes:
        if len(data) < 256:
            return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
        return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING

    shape = b"".join(b"M" + struct.pack("<H", length) for length in rows.shape)
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\nK\x00\x85"
        + string(b"b")
        + b"tR(K\x01"
        + shape
        + b"\x86cnumpy\ndtype\n("
        + string(b"u1")
        + b"K\x00K\x01tR(K\x03"
        + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + string(rows.tobytes())
        + b"tb"
    )
    label_items = b"".join(b"K" + bytes([label]) for label in labels)
    return (
        b"\x80\x02}("
        + string(b"data")
        + array
        + string(b"labels")
        + b"](" + label_items + b"e"
        + string(b"batch_label")
        + string(b"training batch")
        + b"u."
    )  # fmt: skip


def test_python2_pickles_of_the_official_archive_are_read_exactly(tmp_path: Path) -> None:
    members = synthetic_members(3, seed=2)
    expected = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = pickle.loads(members[name], encoding="bytes")
        members[name] = python2_batch(batch[b"data"], batch[b"labels"])
        expected[name] = batch
    path = tmp_path / "py2.tar.gz"
    write_archive(path, members)
    archive = load_cifar_archive(path)
    first = expected[TRAIN_BATCHES[0]]
    np.testing.assert_array_equal(archive.dev.images[:3], planar_to_interleaved(first[b"data"]))
    assert archive.dev.labels[:3].tolist() == first[b"labels"]
    np.testing.assert_array_equal(
        archive.test.images, planar_to_interleaved(expected[TEST_BATCH][b"data"])
    )


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_batches_pickled_with_later_protocols_are_read_exactly(
    tmp_path: Path, tiny_archive: Path, protocol: int
) -> None:
    members = read_members(tiny_archive)
    for name, data in members.items():
        members[name] = pickle.dumps(pickle.loads(data, encoding="bytes"), protocol=protocol)
    path = tmp_path / f"protocol{protocol}.tar.gz"
    write_archive(path, members)
    archive, original = load_cifar_archive(path), load_cifar_archive(tiny_archive)
    np.testing.assert_array_equal(archive.dev.images, original.dev.images)
    np.testing.assert_array_equal(archive.test.labels, original.test.labels)


def test_truncated_archive_is_reported(tmp_path: Path, tiny_archive: Path) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_archive.read_bytes()[: tiny_archive.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        load_cifar_archive(truncated)


def test_corrupt_archive_is_reported(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"this is not a gzip file" * 100)
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        load_cifar_archive(corrupt)


def test_missing_file_and_folder_are_reported_under_the_name_given(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"^mine\.tar\.gz: no such file$"):
        load_cifar_archive(tmp_path / "absent.tar.gz", name="mine.tar.gz")
    with pytest.raises(ArchiveError, match="is a folder, not an archive file"):
        load_cifar_archive(tmp_path)


def test_a_url_given_as_the_name_is_shown_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"^http://127\.0\.0\.1:8/x\.tar\.gz: no such file$"):
        load_cifar_archive(tmp_path / "absent", name="http://127.0.0.1:8/x.tar.gz")


@pytest.mark.integration
def test_devices_and_pipes_are_not_archives(tmp_path: Path) -> None:
    # In a child: read as files, /dev/zero would never end, nor would a pipe nobody writes.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for path in (Path("/dev/zero"), pipe):
        output, peak = measure_load(path)
        assert output == f"{path}: not a regular file (a device, pipe or socket)"
        assert peak < CHILD_PEAK_MIB, peak


@pytest.mark.integration
def test_a_file_larger_than_an_archive_can_be_is_refused_unread(tmp_path: Path) -> None:
    # Sparse files: the size a hostile file could have, without the disk space.
    zeros, garbage = tmp_path / "zeros.tar.gz", tmp_path / "garbage.tar.gz"
    zeros.write_bytes(gzip.compress(b""))
    os.truncate(zeros, 1 << 30)  # 1 GiB of zeros after a gzip stream
    garbage.write_bytes(b"garbage")
    os.truncate(garbage, 2 << 30)
    for path in (zeros, garbage):
        output, peak = measure_load(path)
        assert (
            f"bytes, more than the {MAX_FILE_BYTES >> 20} MiB a CIFAR-10 archive can be" in output
        )
        assert peak < CHILD_PEAK_MIB, peak


@pytest.mark.integration
def test_zeros_after_the_gzip_stream_are_read_in_bounded_memory(
    tmp_path: Path, tiny_archive: Path
) -> None:
    # gzip allows zeros after its stream (tape blocks); the archive is the same.
    padded = tmp_path / "padded.tar.gz"
    padded.write_bytes(tiny_archive.read_bytes())
    os.truncate(padded, MAX_FILE_BYTES)
    output, peak = measure_load(padded)
    assert output == ""
    assert peak < CHILD_PEAK_MIB, peak
    np.testing.assert_array_equal(
        load_cifar_archive(padded).dev.images, load_cifar_archive(tiny_archive).dev.images
    )


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -8, -4, -1])
def test_a_flipped_bit_anywhere_in_the_compressed_data_is_refused(
    tmp_path: Path, tiny_archive: Path, where: float
) -> None:
    # Past the 10-byte gzip header: the deflate stream, then the CRC and the length. The
    # members read before the CRC is checked may be garbled: the gzip check is named.
    data = tiny_archive.read_bytes()
    offset = int(10 + where * (len(data) - 18)) if where > 0 else len(data) + int(where)
    for bit in (0, 3, 7):
        corrupt = tmp_path / "corrupt.tar.gz"
        corrupt.write_bytes(flip_bit(data, offset, bit))
        with pytest.raises(ArchiveError, match="corrupt or truncated gzip data"):
            load_cifar_archive(corrupt)


@pytest.mark.parametrize("bit", [3, 4])
def test_isal_errors_are_one_line(tmp_path: Path, tiny_archive: Path, bit: int) -> None:
    # FLG bits 3 and 4 announce a file name or comment: the deflate data is read as one.
    corrupt = tmp_path / "flags.tar.gz"
    corrupt.write_bytes(flip_bit(tiny_archive.read_bytes(), 3, bit))
    with pytest.raises(ArchiveError, match=r"corrupt or truncated gzip data \(Error -1 Invalid"):
        load_cifar_archive(corrupt)


def test_trailing_bytes_after_the_gzip_stream_are_refused(
    tmp_path: Path, tiny_archive: Path
) -> None:
    padded = tmp_path / "padded.tar.gz"
    padded.write_bytes(tiny_archive.read_bytes() + b"extra")
    with pytest.raises(ArchiveError, match="corrupt or truncated gzip data"):
        load_cifar_archive(padded)


def test_a_corrupt_tar_header_is_called_corrupt(tmp_path: Path, tiny_archive: Path) -> None:
    tar = bytearray(gzip.decompress(tiny_archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        second_header = archive.getmembers()[1].offset
    tar[second_header + 100] ^= 0xFF  # its mode field: the header checksum no longer fits
    corrupt = tmp_path / "header.tar.gz"
    corrupt.write_bytes(gzip.compress(bytes(tar)))  # a valid gzip stream around a bad tar
    with pytest.raises(
        ArchiveError,
        match=f"corrupt tar data \\(from byte {second_header:,} of the tar on, neither a valid "
        "header nor the zeros that end an archive\\)",
    ):
        load_cifar_archive(corrupt)


def test_data_after_the_end_of_the_tar_is_refused(tmp_path: Path, tiny_archive: Path) -> None:
    tar = gzip.decompress(tiny_archive.read_bytes())
    appended = tmp_path / "appended.tar.gz"
    appended.write_bytes(gzip.compress(tar + b"\0" * 1024 + b"more data"))
    with pytest.raises(ArchiveError, match="neither a valid header nor the zeros that end"):
        load_cifar_archive(appended)


def test_a_tar_cut_inside_a_member_is_refused(tmp_path: Path) -> None:
    readme = b"x" * 4096
    tar = gzip.decompress(
        tar_gz([*entries_of(synthetic_members(1)), file_entry("readme.html", readme)])
    )
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(tar[: tar.index(readme) + 100]))
    with pytest.raises(ArchiveError, match=r"corrupt tar data \(unexpected end of data\)"):
        load_cifar_archive(cut)


def test_a_member_larger_than_a_batch_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo(f"{FOLDER}/{TRAIN_BATCHES[0]}")
    info.size = MAX_MEMBER_BYTES + 1
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    # A header that claims more bytes than follow: refused on the size, not on reading.
    big = tmp_path / "big.tar.gz"
    big.write_bytes(gzip.compress(header + bytes(1024)))
    with pytest.raises(ArchiveError, match="more than the 64 MiB a CIFAR-10 batch can be"):
        load_cifar_archive(big)


@pytest.mark.integration
def test_an_archive_that_inflates_too_far_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as file:
        zeros = bytes(16 << 20)
        for _ in range(MAX_ARCHIVE_BYTES // len(zeros) + 1):
            file.write(zeros)
    assert bomb.stat().st_size < 4 << 20  # a few MB on disk
    output, peak = measure_load(bomb)
    assert f"more than {MAX_ARCHIVE_BYTES >> 20} MiB uncompressed, far more than" in output
    assert peak < CHILD_PEAK_MIB, peak


@pytest.mark.integration
def test_an_unused_member_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "filler.tar.gz"
    filler = tarfile.TarInfo(f"{FOLDER}/readme.html")
    filler.size = 256 << 20
    with (
        gzip.open(path, "wb", compresslevel=1) as compressed,
        tarfile.open(fileobj=compressed, mode="w|") as archive,
        Path("/dev/zero").open("rb") as zeros,
    ):
        archive.addfile(filler, zeros)
        for info, data in entries_of(synthetic_members(1)):
            archive.addfile(info, io.BytesIO(data))
    output, peak = measure_load(path)
    assert output == ""
    assert peak < CHILD_PEAK_MIB, peak


def test_missing_batch_is_named(tmp_path: Path, tiny_archive: Path) -> None:
    members = read_members(tiny_archive)
    del members[TEST_BATCH]
    incomplete = tmp_path / "incomplete.tar.gz"
    write_archive(incomplete, members)
    with pytest.raises(ArchiveError, match=f"not CIFAR-10's: missing {FOLDER}/{TEST_BATCH}"):
        load_cifar_archive(incomplete)


def test_members_named_from_dot_slash_are_read(tmp_path: Path) -> None:
    # `tar -C folder -czf archive.tar.gz .` names members ./cifar-10-batches-py/...
    members = synthetic_members(2)
    plain, dotted = tmp_path / "plain.tar.gz", tmp_path / "dotted.tar.gz"
    plain.write_bytes(tar_gz(entries_of(members)))
    dotted.write_bytes(tar_gz(entries_of(members, prefix="./")))
    np.testing.assert_array_equal(
        load_cifar_archive(dotted).dev.images, load_cifar_archive(plain).dev.images
    )


def test_a_batch_given_twice_is_refused(tmp_path: Path) -> None:
    members = synthetic_members(2)
    again = file_entry(
        f"./{FOLDER}/{TRAIN_BATCHES[0]}", synthetic_members(2, seed=9)[TRAIN_BATCHES[0]]
    )
    path = tmp_path / "twice.tar.gz"
    path.write_bytes(tar_gz([*entries_of(members), again]))
    with pytest.raises(
        ArchiveError, match=f"{FOLDER}/data_batch_1: appears twice in the archive; which copy"
    ):
        load_cifar_archive(path)


def test_a_link_named_like_a_batch_is_refused(tmp_path: Path) -> None:
    members = synthetic_members(2)
    link = tarfile.TarInfo(f"{FOLDER}/{TEST_BATCH}")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    del members[TEST_BATCH]
    path = tmp_path / "link.tar.gz"
    path.write_bytes(tar_gz([*entries_of(members), (link, b"")]))
    with pytest.raises(ArchiveError, match="test_batch: a link, folder or sparse file"):
        load_cifar_archive(path)


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    extras = [file_entry(f"note{index}", b"") for index in range(MAX_MEMBERS)]
    path = tmp_path / "many.tar.gz"
    path.write_bytes(tar_gz(extras + entries_of(synthetic_members(1))))
    with pytest.raises(ArchiveError, match=f"more than {MAX_MEMBERS} members"):
        load_cifar_archive(path)


def replace_batch_entry(
    tmp_path: Path, tiny_archive: Path, name: str, key: bytes, value: object
) -> Path:
    members = read_members(tiny_archive)
    batch = pickle.loads(members[name], encoding="bytes")
    batch[key] = value
    members[name] = pickle.dumps(batch, protocol=2)
    path = tmp_path / "changed.tar.gz"
    write_archive(path, members)
    return path


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"labels", [3] * 39 + [10], "label 39 is 10; labels are integers from 0 to 9"),
        (b"labels", [0.5] * 40, "label 0 is 0.5; labels are integers"),
        (b"labels", [True] * 40, "label 0 is True; labels are integers"),
        (b"labels", [[1, 2]] * 40, r"label 0 is \[1, 2\]; labels are integers"),
        (b"labels", [1] * 39 + [[[[[[[[1]]]]]]]], r"label 39 is \[\[\[\[\[\[\[...\]\]\]\]\]\]\]"),
        (b"labels", [0] * 39, "b'labels' must be a list of 40 integers .*got a list of 39 items"),
        (b"labels", np.zeros(40, np.uint8), "must be a list of 40 integers .*got a uint8 array"),
        (b"data", np.zeros((40, 3072), np.float64), r"uint8 array .*got a float64 array"),
        (b"data", np.zeros((40, 1024), np.uint8), r"got a uint8 array of shape \(40, 1024\)"),
        (b"data", [1, 2], r"must be an \(N, 3072\) uint8 array .*got a list of 2 items"),
    ],
)
def test_invalid_batches_are_named(
    tmp_path: Path, tiny_archive: Path, key: bytes, value: object, message: str
) -> None:
    path = replace_batch_entry(tmp_path, tiny_archive, TRAIN_BATCHES[0], key, value)
    with pytest.raises(ArchiveError, match=f"{FOLDER}/{TRAIN_BATCHES[0]}: .*{message}"):
        load_cifar_archive(path)


@pytest.mark.parametrize(
    "names",
    [
        [b"cat", b"dog"],
        [name.encode("utf-16") for name in CLASS_NAMES],
        [b"\xff\xfe"] + [name.encode() for name in CLASS_NAMES[1:]],
        "airplane",
    ],
)
def test_wrong_class_names_are_refused(tmp_path: Path, tiny_archive: Path, names: object) -> None:
    path = replace_batch_entry(tmp_path, tiny_archive, META_FILE, b"label_names", names)
    with pytest.raises(ArchiveError, match="label_names must be"):
        load_cifar_archive(path)


def test_batches_must_hold_as_many_images_as_the_meta_file_says(
    tmp_path: Path, tiny_archive: Path
) -> None:
    path = replace_batch_entry(tmp_path, tiny_archive, META_FILE, b"num_cases_per_batch", 30)
    with pytest.raises(
        ArchiveError, match=r"data_batch_1 holds 40 images, but batches\.meta says 30"
    ):
        load_cifar_archive(path)


def test_written_archives_are_plain_tar_gz(tmp_path: Path) -> None:
    path = tmp_path / "one.tar.gz"
    write_archive(path, {"note": b"hello"})
    with gzip.open(path) as compressed, tarfile.open(fileobj=io.BytesIO(compressed.read())) as tar:
        assert tar.getnames() == [f"{FOLDER}/note"]


# The property tests: any bytes give the arrays the archive holds, or one ArchiveError,
# within a memory bound. Small archives (3 images a batch) keep each example fast.
SMALL_MEMBERS = synthetic_members(3, seed=5)
SMALL_ARCHIVE = tar_gz(entries_of(SMALL_MEMBERS))
SMALL_TAR = gzip.decompress(SMALL_ARCHIVE)
# Far above what the small archive needs (its tar is 30 kB), far below what a blow-up makes.
TRACED_PEAK_BYTES = 8 << 20

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def arrays_of(archive: CifarArchive) -> Arrays:
    return archive.dev.images, archive.dev.labels, archive.test.images, archive.test.labels


def reference_read(compressed: bytes) -> Arrays:
    """Read an archive another way: gzip whole, tarfile by name, a plain unpickler."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(compressed))) as archive:
        members = {
            member.name.removeprefix("./").removeprefix(f"{FOLDER}/"): archive.extractfile(
                member
            ).read()
            for member in archive
            if member.isfile()
        }
    batches = [
        pickle.loads(members[name], encoding="bytes") for name in (*TRAIN_BATCHES, TEST_BATCH)
    ]
    # Keras' own reordering, not the one under test.
    images = [
        np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 3072)
        for batch in batches
    ]
    labels = [np.asarray(batch[b"labels"], np.uint8) for batch in batches]
    return np.concatenate(images[:5]), np.concatenate(labels[:5]), images[5], labels[5]


def check_exact_or_refused(data: bytes, expected: Callable[[], Arrays]) -> None:
    """The archive in ``data`` reads as ``expected()`` or fails in one line, in bounded memory."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "archive.tar.gz"
        path.write_bytes(data)
        message = ""
        with AllocationPeak() as peak:
            try:
                archive = load_cifar_archive(path)
            except PipelineError as error:
                archive, message = None, str(error)
    assert "\n" not in message
    assert peak.bytes < TRACED_PEAK_BYTES
    if archive is not None:
        for got, wanted in zip(arrays_of(archive), expected(), strict=True):
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, wanted)


def opcode_positions(pickled: bytes) -> list[int]:
    """Where a pickle's opcodes and their length or index fields are."""
    return [
        position + shift for _, _, position in pickletools.genops(pickled) for shift in range(5)
    ]


# What the property tests change, by name (hypothesis shows a strategy's arguments), and
# the positions worth aiming at: gzip header and trailer, tar headers, pickle opcodes.
SOURCES: dict[str, tuple[bytes, list[int]]] = {
    "archive": (SMALL_ARCHIVE, [*range(10), *range(-8, 0)]),
    "tar": (
        SMALL_TAR,
        [
            offset
            for header in range(0, len(SMALL_TAR), 512)
            if SMALL_TAR[header + 257 : header + 262] == b"ustar"
            for offset in range(header, header + 512, 7)
        ],
    ),
    **{
        name: (SMALL_MEMBERS[name], opcode_positions(SMALL_MEMBERS[name]))
        for name in (TRAIN_BATCHES[0], TEST_BATCH, META_FILE)
    },
}


Edit = tuple[str, int, int | bytes]  # kind, position, value


@st.composite
def edits(draw: st.DrawFn, source: str) -> list[Edit]:
    """A few edits of a source: flipped, replaced, deleted or inserted bytes, or a cut.

    Edits, not the edited bytes, are what hypothesis shows of a failing example.
    """
    data, positions = SOURCES[source]
    chosen = []
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.sampled_from(positions) | st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "replace", "delete", "insert", "cut"]))
        value = draw(
            st.binary(min_size=1, max_size=16) if kind == "insert" else st.integers(0, 255)
        )
        chosen.append((kind, position, value))
    return chosen


def edited(source: str, changes: Sequence[Edit]) -> bytes:
    data = bytearray(SOURCES[source][0])
    for kind, position, value in changes:
        if not data:
            break
        at = position % len(data)  # earlier edits may have made it shorter
        if kind == "flip":
            data[at] ^= 1 << (value % 8)
        elif kind == "replace":
            data[at] = value
        elif kind == "delete":
            del data[at : at + 1 + value % 16]
        elif kind == "insert":
            data[at:at] = value
        else:
            del data[at:]
    return bytes(data)


@pytest.mark.integration
@settings(max_examples=150, deadline=None)
@given(changes=edits("archive"))
def test_any_compressed_bytes_give_the_archive_itself_or_one_error(changes: list[Edit]) -> None:
    # The gzip CRC covers every byte of the tar: nothing but the original can be read.
    check_exact_or_refused(edited("archive", changes), lambda: reference_read(SMALL_ARCHIVE))


@pytest.mark.integration
@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_are_one_error(data: bytes) -> None:
    check_exact_or_refused(data, lambda: reference_read(SMALL_ARCHIVE))


@pytest.mark.integration
@settings(max_examples=150, deadline=None)
@given(changes=edits("tar"))
def test_any_tar_gives_what_it_holds_or_one_error(changes: list[Edit]) -> None:
    compressed = gzip.compress(edited("tar", changes), mtime=0)
    check_exact_or_refused(compressed, lambda: reference_read(compressed))


@pytest.mark.integration
@settings(max_examples=200, deadline=None)
@given(
    changed=st.sampled_from([TRAIN_BATCHES[0], TEST_BATCH, META_FILE]).flatmap(
        lambda name: st.tuples(st.just(name), edits(name))
    )
)
def test_any_pickle_gives_what_it_holds_or_one_error(changed: tuple[str, list[Edit]]) -> None:
    name, changes = changed
    compressed = tar_gz(entries_of({**SMALL_MEMBERS, name: edited(name, changes)}))
    check_exact_or_refused(compressed, lambda: reference_read(compressed))


def test_a_file_larger_than_an_archive_can_be_is_refused_by_its_size(tmp_path: Path) -> None:
    # In-process: the size is refused before a byte is read (the child-process test above
    # measures the memory of that too).
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"garbage")
    os.truncate(garbage, MAX_FILE_BYTES + 1)  # sparse: no disk taken
    with pytest.raises(
        ArchiveError, match=rf"^{garbage}: {MAX_FILE_BYTES + 1:,} bytes, more than the 256 MiB"
    ):
        load_cifar_archive(garbage)
