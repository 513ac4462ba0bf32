"""Hostile data files, built byte by byte in their real formats: headers that claim petabytes, images whose header
claims 65000x65000 pixels, a disk that fills up while unpacking. Each goes through the real loader (and the CLI
where one reads it) and must give one DataError line, never a MemoryError, a traceback, or an allocation."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.data import build_dataset
from stcsnn.data.download import extract_zip
from stcsnn.data.formats import human_bytes, load_npy, load_npz, npz_keys, npz_shapes
from stcsnn.data.kth import read_frame
from stcsnn.data.registry import DATASETS
from stcsnn.errors import DataError
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import model_checkpoint

PETA = (10**12, 4, 2, 32, 32)  # 10**12 TaxiBJ-sized samples: 32.8 PB of float32


def npy_bytes(shape: tuple[int, ...], descr: str = "<f4", payload: bytes = bytes(64)) -> bytes:
    """A .npy file whose header declares ``shape`` and whose data is only ``payload``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload




def tiny_checkpoint(path: Path, **cfg) -> Path:
    base = {"neuron": "lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "input_frames": 2,
            "output_frames": 1, "eval_batch_size": 2}
    config = make_config({**base, **cfg})
    torch.manual_seed(0)
    atomic_torch_save(model_checkpoint(build_model(config), config), path)
    return path


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (192, 1200, 8 * 10**15, 32768000000000128)] == ["192 B", "1.2 kB", "8 PB",
                                                                                    "32.8 PB"]


# --- .npy ---------------------------------------------------------------------------------------------------

def test_npy_header_claiming_petabytes(tmp_path) -> None:
    path = tmp_path / "videos.npy"
    path.write_bytes(npy_bytes(PETA))
    for load in (lambda: load_npy(path), lambda: load_npy(path, mmap=False),
                 lambda: build_dataset("npy", "train", path=path)):
        with pytest.raises(DataError, match=r"videos\.npy: expected 32768000000000128 bytes for a float32 array of "
                                            r"shape \(1000000000000, 4, 2, 32, 32\) \(its header declares 32\.8 "
                                            r"PB\), found 192 bytes; the file is truncated or corrupt"):
            load()


def test_npy_shape_whose_int64_product_wraps_around(tmp_path) -> None:
    """2**62 x 4 uint8 = 2**64 bytes, which np.prod(..., dtype=int64) computes as 0: a header-only file would
    then look complete."""
    path = tmp_path / "wrap.npy"
    path.write_bytes(npy_bytes((2**62, 4), "|u1", payload=b""))
    assert int(np.prod((2**62, 4), dtype=np.int64)) == 0
    with pytest.raises(DataError, match=r"expected 18446744073709551744 bytes .*found 128 bytes; the file is "
                                        r"truncated"):
        load_npy(path)
    path.write_bytes(npy_bytes((-8, -1), "|u1", payload=bytes(8)))  # a product that matches, but negative dims
    with pytest.raises(DataError, match=r"non-negative shape"):
        load_npy(path)


def test_mmnist_test_file_claiming_petabytes(tmp_path) -> None:
    (tmp_path / "moving_mnist").mkdir()
    (tmp_path / "moving_mnist" / "mnist_test_seq.npy").write_bytes(npy_bytes((20, 10**12, 64, 64), "|u1"))
    with pytest.raises(DataError, match=r"mnist_test_seq\.npy: expected \d+ bytes .* 81\.9 PB.*truncated or "
                                        r"corrupt"):
        build_dataset("mmnist", "test", root=tmp_path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "best.pt", dataset="embedded", frame_shape=[1, 16, 16],
                           data_options={"canvas_size": 16})


def test_predict_and_visualize_refuse_a_petabyte_npy(ckpt, tmp_path, capsys) -> None:
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(npy_bytes((10**12, 2, 1, 16, 16)))
    good = tmp_path / "in.npy"
    np.save(good, np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    rc = main(["predict", "--checkpoint", str(ckpt), "--input", str(bomb), "--output", str(tmp_path / "p.npy"),
               "--device", "cpu"])
    line = one_error(capsys, rc)
    assert "bomb.npy" in line and "PB" in line and "truncated or corrupt" in line
    assert not (tmp_path / "p.npy").exists()
    assert "PB" in one_error(capsys, main(["visualize", str(bomb), "--input", str(good)]))
    assert "PB" in one_error(capsys, main(["visualize", str(good), "--input", str(bomb)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.npy", "in.npy"]


# --- .npz ---------------------------------------------------------------------------------------------------

def write_npz(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def taxibj_bomb(root: Path) -> Path:
    ok = npy_bytes((2, 4, 2, 32, 32), payload=bytes(2 * 4 * 2 * 32 * 32 * 4))
    return write_npz(root / "taxibj" / "dataset.npz", {"X_train": npy_bytes(PETA), "Y_train": ok,
                                                      "X_test": npy_bytes(PETA), "Y_test": ok})


def test_npz_member_claiming_petabytes(tmp_path) -> None:
    path = taxibj_bomb(tmp_path)
    message = (r"dataset\.npz \(member X_train\.npy\): expected 32768000000000128 bytes for a float32 array of shape "
               r"\(1000000000000, 4, 2, 32, 32\) \(its header declares 32\.8 PB\), found 192 bytes; the file is "
               r"truncated or corrupt \(the member holds 192 B\)")
    for load in (lambda: build_dataset("taxibj", "train", root=tmp_path), lambda: npz_shapes(path),
                 lambda: load_npz(path, ["X_train"]),
                 lambda: build_dataset("npy", "train", path=path, key="X_train")):
        with pytest.raises(DataError, match=message):
            load()
    assert load_npz(path, ["Y_test"])["Y_test"].shape == (2, 4, 2, 32, 32)  # the honest members still load


def test_npz_zip_directory_lying_about_the_member_size(tmp_path) -> None:
    """The header and the zip directory agree on 4 GB, but 4 GB cannot come out of ~200 deflated bytes."""
    n = 4_000_000_000
    data = npy_bytes((n,), "|u1", payload=bytes(64))
    declared = len(data) - 64 + n
    path = write_npz(tmp_path / "v.npz", {"videos": data})
    raw = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory: uncompressed size
        pos = raw.index(sig)
        raw[pos + at: pos + at + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).getinfo("videos.npy").file_size == declared
    with pytest.raises(DataError, match=r"v\.npz \(member videos\.npy\): expected an uncompressed size that \d+ B "
                                        r"of compressed data can hold, found the zip directory claiming 4 GB"):
        build_dataset("npy", "train", path=path)
    stored = write_npz(tmp_path / "s.npz", {"videos": data}, zipfile.ZIP_STORED)
    raw = bytearray(stored.read_bytes())
    pos = raw.index(b"PK\x01\x02")
    raw[pos + 24: pos + 28] = struct.pack("<I", declared)
    stored.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="found the zip directory claiming 4 GB"):
        npz_shapes(stored)


def test_npy_bomb_under_an_npz_name(tmp_path) -> None:
    """np.load would read a .npy named dataset.npz as an array (allocating what it claims); zipfile refuses it."""
    (tmp_path / "taxibj").mkdir()
    (tmp_path / "taxibj" / "dataset.npz").write_bytes(npy_bytes(PETA))
    with pytest.raises(DataError, match=r"dataset\.npz: expected an \.npz \(zip\) archive, found a corrupt"):
        build_dataset("taxibj", "test", root=tmp_path)
    with pytest.raises(DataError, match="expected an .npz"):
        npz_keys(tmp_path / "taxibj" / "dataset.npz")


def test_eval_on_a_petabyte_taxibj_archive_is_one_line(tmp_path, capsys) -> None:
    taxibj_bomb(tmp_path / "data")
    ck = tiny_checkpoint(tmp_path / "bj" / "best.pt", dataset="taxibj", frame_shape=[2, 32, 32])
    rc = main(["eval", "--checkpoint", str(ck), "--set", f"data_root={tmp_path / 'data'}", "--device", "cpu"])
    line = one_error(capsys, rc)
    assert "(member X_t" in line and "32.8 PB" in line
    assert sorted(p.name for p in (tmp_path / "bj").iterdir()) == ["best.pt"]


# --- KTH frames ---------------------------------------------------------------------------------------------

def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 segment is patched to declare ``width`` x ``height``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG built by hand: an IHDR declaring ``width`` x ``height`` grey pixels, and one row of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1 + min(width, 64)))) + chunk(b"IEND", b""))


def kth_root(root: Path, frame: bytes) -> Path:
    """KTH layout, videos of 3 frames for train (01), val (16) and test (17); the test video's first frame is
    ``frame``. Returns that frame's path."""
    from PIL import Image

    for rel in ("boxing/person01_boxing_d1_uncomp", "boxing/person16_boxing_d1_uncomp",
                "walking/person17_walking_d1_uncomp"):
        d = root / "kth" / rel
        d.mkdir(parents=True)
        for k in range(1, 4):
            Image.new("L", (20, 15), 40 * k).save(d / f"image_{k:04d}.jpg")
    bad = root / "kth" / "walking/person17_walking_d1_uncomp/image_0001.jpg"
    bad.write_bytes(frame)
    return bad


@pytest.mark.parametrize("frame, message", [
    (jpeg_claiming(65000, 65000), "corrupt or truncated file .*decompression bomb"),
    (png_claiming(65000, 65000), "corrupt or truncated file .*decompression bomb"),
    (jpeg_claiming(10000, 10000), "found a header declaring 10000x10000 pixels"),  # Pillow only warns here
    (png_claiming(8200, 8200), "found a header declaring 8200x8200 pixels"),  # under Pillow's limit
    (png_claiming(4000, 4000), "corrupt or truncated file"),  # plausible size, 1 row of data: truncated
    (b"GIF87a this is no image", "corrupt or truncated file .*cannot identify image file"),
])
def test_kth_frame_with_a_hostile_header(tmp_path, frame, message) -> None:
    bad = kth_root(tmp_path, frame)
    with pytest.raises(DataError, match=rf"image_0001\.jpg: expected .*{message}"):
        read_frame(bad, 16)
    test = build_dataset("kth", "test", root=tmp_path, input_frames=2, output_frames=1, image_size=16)
    with pytest.raises(DataError, match=r"person17_walking_d1_uncomp/image_0001\.jpg"):
        test[0]


def test_eval_on_a_kth_bomb_frame_is_one_line(tmp_path, capsys) -> None:
    kth_root(tmp_path / "data", jpeg_claiming(65000, 65000))
    ck = tiny_checkpoint(tmp_path / "kth" / "best.pt", dataset="kth", frame_shape=[1, 16, 16],
                         data_options={"image_size": 16})
    rc = main(["eval", "--checkpoint", str(ck), "--set", f"data_root={tmp_path / 'data'}", "--device", "cpu"])
    line = one_error(capsys, rc)
    assert "image_0001.jpg" in line and "decompression bomb" in line


# --- a full disk while unpacking ----------------------------------------------------------------------------

def small_tmpfs(path: Path, monkeypatch) -> str:
    """``path`` as a 64 kB filesystem (a real tmpfs where ``mount`` works, else a simulated ENOSPC)."""
    path.mkdir()
    if os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True).returncode == 0:
        return "mount"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    return "monkeypatch"


def zeros_archive(path: Path) -> Path:
    """A ~2 kB zip that unpacks to 1 MB (taxibj_dataset/dataset.npz, zeros)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("taxibj_dataset/dataset.npz", bytes(1 << 20))
    return path


def test_full_disk_while_unpacking_is_not_a_corrupt_archive(tmp_path, monkeypatch) -> None:
    archive = zeros_archive(tmp_path / "taxibj_dataset.zip")
    dest = tmp_path / "small"
    how = small_tmpfs(dest, monkeypatch)
    try:
        with pytest.raises(DataError, match=rf"no space left on device while unpacking {archive} into {dest}"):
            extract_zip(archive, dest, ("dataset.npz",))
        assert list(dest.iterdir()) == []  # the partial extraction is removed
        assert archive.is_file()
    finally:
        if how == "mount":
            subprocess.run(["umount", "-l", str(dest)], capture_output=True)


def test_prepare_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    archive = zeros_archive(tmp_path / "taxibj_dataset.zip")
    root = tmp_path / "root"
    how = small_tmpfs(root, monkeypatch)
    spec = dataclasses.replace(DATASETS["taxibj"].files(None)[0][0], urls=(archive.as_uri(),))

    def files(r):
        return [(spec, root / spec.path)]
    monkeypatch.setitem(DATASETS, "taxibj", dataclasses.replace(DATASETS["taxibj"], files=files))
    try:
        rc = main(["data", "prepare", "taxibj", "--root", str(root)])
        out = capsys.readouterr()
        assert rc == 2 and "Traceback" not in out.err
        last = out.err.strip().splitlines()[-1]
        assert last.startswith("error: no space left on device while unpacking") and "corrupt" not in out.err
        assert (root / spec.path).is_file()  # the download is kept for the next try
    finally:
        if how == "mount":
            subprocess.run(["umount", "-l", str(root)], capture_output=True)
