"""Low-level I/O: shard files written with and without direct I/O, mapped tensor reads, buffer reuse."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import perta_hub.io.shard_file as shard_file
from perta_hub.io.reader import open_checkpoint
from perta_hub.io.shard_file import ShardFile
from perta_hub.runtime.buffers import BufferPool


def _write(path: Path, header: bytes, pieces: list[bytes]) -> str:
    """Write the file; returns the sha256 the writer computed while writing."""
    file = ShardFile(path, header, sum(map(len, pieces)), digest=True)
    offset = len(header)
    for piece in pieces:
        file.write_at(offset, piece)
        offset += len(piece)
    file.finish()
    os.fsync(file.fd)
    file.close()
    assert file.sha256 is not None
    return file.sha256.hexdigest()


@pytest.mark.parametrize("direct", ["1", "0"])
@pytest.mark.parametrize("sizes", [[0], [1], [4095, 1], [8191, 8193, 3], [20000] * 5])
def test_shard_file_writes_exact_bytes(tmp_path, monkeypatch, direct, sizes):
    """Direct (staged, padded, truncated) and page-cache writes give the same exact file."""
    monkeypatch.setenv("PERTA_HUB_DIRECT_IO", direct)
    monkeypatch.setattr(shard_file, "STAGING_BYTES", 8192)  # several staging flushes per file
    monkeypatch.setattr(shard_file, "HASH_BESIDE_BYTES", 4096)  # blocks hashed in the second thread and inline
    header = b"h" * 13
    pieces = [os.urandom(n) for n in sizes]
    digest = _write(tmp_path / "f", header, pieces)
    assert (tmp_path / "f").read_bytes() == header + b"".join(pieces)
    assert digest == hashlib.sha256(header + b"".join(pieces)).hexdigest()  # hashed while written, in order


def test_shard_file_on_tmpfs(tmp_path):
    """tmpfs takes O_DIRECT only since Linux 6.6; either way the file is whole. (The refusal path, EINVAL
    then page-cache writes, is what test_full_disk_gives_one_line_and_no_partial_file goes through.)"""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm on this system (macOS, some containers): nothing to test")
    target = shm / f"perta-hub-test-{os.getpid()}"
    try:
        _write(target, b"x" * 7, [b"abc" * 5000])
        assert target.read_bytes() == b"x" * 7 + b"abc" * 5000
    finally:
        target.unlink(missing_ok=True)


def test_shard_file_refuses_out_of_order_and_short_writes(tmp_path):
    file = ShardFile(tmp_path / "f", b"hdr", 10)
    with pytest.raises(RuntimeError, match="expected 3"):
        file.write_at(5, b"12345")
    file.write_at(3, b"12345")
    with pytest.raises(RuntimeError, match="8 bytes written, 13 planned"):
        file.finish()
    file.close()


def test_mapped_tensor_is_private(tmp_path):
    """A tensor read from a checkpoint can be changed in place; the file never changes."""
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.arange(5000, dtype=torch.float32), "b": torch.ones(3, dtype=torch.bfloat16)}, path,
              metadata={"format": "pt"})
    before = path.read_bytes()
    ckpt = open_checkpoint(path)
    a = ckpt.get("a")
    assert torch.equal(a, torch.arange(5000, dtype=torch.float32))
    a.mul_(-1)
    assert ckpt.get("b").dtype == torch.bfloat16
    ckpt.close()
    assert path.read_bytes() == before
    assert torch.equal(load_file(path)["a"], torch.arange(5000, dtype=torch.float32))


def test_buffer_pool_reuses_same_size_and_keeps_a_bounded_amount():
    pool = BufferPool(max_free_bytes=64)
    first = pool.empty((4, 4), torch.float32)  # 64 bytes
    ptr = first.data_ptr()
    pool.give(first)
    again = pool.empty((16,), torch.float32)
    assert again.data_ptr() == ptr and again.shape == (16,)
    other = pool.empty((8,), torch.bfloat16)  # 16 bytes: a new buffer
    assert other.data_ptr() != ptr
    pool.give(again)
    assert pool.free_bytes == 64
    pool.give(other)  # 64 + 16 > 64: freed, not kept
    assert pool.free_bytes == 64
    pool.empty((16,), torch.float32)
    assert pool.free_bytes == 0
