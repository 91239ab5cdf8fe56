"""Reading CIFAR-10 archives: the format, its validation, and refusing unsafe pickles."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from stages.cifar import (
    CLASS_NAMES,
    FOLDER,
    MAX_ARCHIVE_BYTES,
    MAX_MEMBER_BYTES,
    META_FILE,
    TEST_BATCH,
    TRAIN_BATCHES,
    ArchiveError,
    file_md5,
    interleaved_to_planar,
    load_cifar_archive,
    planar_to_interleaved,
)
from tools.synthetic_archive import make_synthetic_archive, write_archive


def read_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        return {
            member.name.rsplit("/", 1)[1]: archive.extractfile(member).read()
            for member in archive
            if member.isfile()
        }


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


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -8, -4, -1])
def test_a_flipped_bit_anywhere_in_the_compressed_data_is_refused(
    tmp_path: Path, tiny_archive: Path, where: float
) -> None:
    # Past the 10-byte gzip header: the deflate stream, then the CRC and the length.
    data = tiny_archive.read_bytes()
    offset = int(10 + where * (len(data) - 18)) if where > 0 else len(data) + int(where)
    for bit in (0, 3, 7):
        corrupt = tmp_path / "corrupt.tar.gz"
        corrupt.write_bytes(flip_bit(data, offset, bit))
        with pytest.raises(ArchiveError, match="corrupt or truncated gzip data"):
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
        ArchiveError, match=f"corrupt tar data \\(a damaged header at byte {second_header}\\)"
    ):
        load_cifar_archive(corrupt)


def test_a_member_larger_than_a_batch_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo(f"{FOLDER}/{TRAIN_BATCHES[0]}")
    info.size = MAX_MEMBER_BYTES + 1
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    # A header that claims more bytes than follow: refused on the size, not on reading.
    big = tmp_path / "big.tar.gz"
    big.write_bytes(gzip.compress(header + bytes(1024)))
    with pytest.raises(ArchiveError, match="more than a CIFAR-10 batch can be"):
        load_cifar_archive(big)


def test_an_archive_that_inflates_too_far_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as file:
        zeros = bytes(16 << 20)
        for _ in range(MAX_ARCHIVE_BYTES // len(zeros) + 1):
            file.write(zeros)
    assert bomb.stat().st_size < 4 << 20  # a few MB on disk
    with pytest.raises(ArchiveError, match="MiB uncompressed, far more than"):
        load_cifar_archive(bomb)


def test_missing_batch_is_named(tmp_path: Path, tiny_archive: Path) -> None:
    members = read_members(tiny_archive)
    del members[TEST_BATCH]
    incomplete = tmp_path / "incomplete.tar.gz"
    write_archive(incomplete, members)
    with pytest.raises(ArchiveError, match=f"not CIFAR-10's: missing {FOLDER}/{TEST_BATCH}"):
        load_cifar_archive(incomplete)


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
        (b"labels", [3] * 39 + [10], "label 10 is outside 0-9 \\(1 such labels\\)"),
        (b"labels", [0.5] * 40, "labels must be integers, got float64 values"),
        (b"labels", [0] * 39, "b'labels' must be a list of 40 integers"),
        (b"data", np.zeros((40, 3072), np.float64), "must be an \\(N, 3072\\) uint8 array"),
        (
            b"data",
            np.zeros((40, 1024), np.uint8),
            "data has shape \\(40, 1024\\), expected \\(40, 3072\\)",
        ),
    ],
)
def test_invalid_batches_are_named(
    tmp_path: Path, tiny_archive: Path, key: bytes, value: object, message: str
) -> None:
    path = replace_batch_entry(tmp_path, tiny_archive, TRAIN_BATCHES[0], key, value)
    with pytest.raises(ArchiveError, match=f"{FOLDER}/{TRAIN_BATCHES[0]}: .*{message}"):
        load_cifar_archive(path)


def test_wrong_class_names_are_refused(tmp_path: Path, tiny_archive: Path) -> None:
    path = replace_batch_entry(tmp_path, tiny_archive, META_FILE, b"label_names", [b"cat", b"dog"])
    with pytest.raises(ArchiveError, match="label_names must be"):
        load_cifar_archive(path)


def test_python2_style_official_pickles_are_accepted(tmp_path: Path, tiny_archive: Path) -> None:
    # The official archive was written by Python 2: numpy.core.multiarray and byte strings.
    members = read_members(tiny_archive)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        members[name] = members[name].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "py2.tar.gz"
    write_archive(path, members)
    assert load_cifar_archive(path).dev.images.shape == (200, 3072)


def test_written_archives_are_plain_tar_gz(tmp_path: Path) -> None:
    path = tmp_path / "one.tar.gz"
    write_archive(path, {"note": b"hello"})
    with gzip.open(path) as compressed, tarfile.open(fileobj=io.BytesIO(compressed.read())) as tar:
        assert tar.getnames() == [f"{FOLDER}/note"]
