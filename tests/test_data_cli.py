"""``stcsnn data info/prepare`` and the resumable, atomic download; offline (127.0.0.1 and file:// only)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stcsnn.cli import main
from stcsnn.data import DATASETS
from stcsnn.data import download as dl
from stcsnn.data.download import Checksum, FileSpec, download
from stcsnn.errors import DataError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
PAYLOAD_SUM = Checksum(hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD), "test")


def write_idx(path: Path, arr: np.ndarray) -> Path:
    raw = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw))
    return path


def mmnist_files(root: Path) -> None:
    write_idx(root / "moving_mnist" / "train-images-idx3-ubyte.gz", np.full((4, 28, 28), 200, np.uint8))
    np.save(root / "moving_mnist" / "mnist_test_seq.npy", np.zeros((20, 2, 64, 64), np.uint8))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# --- a local HTTP server with Range support that can drop a connection half-way -----------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    cut_first = True  # the first full request stops after half the body
    ignore_range = False
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/file.bin":
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = int(rng[len("bytes="):-1]) if rng and not self.ignore_range else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Handler.cut_first, Handler.ignore_range, Handler.ranges = True, False, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_download_resumes_and_is_atomic(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dl, "CHUNK", 4096)
    dest = tmp_path / "sub" / "file.bin"
    part = dest.with_name("file.bin.part")
    with pytest.raises(DataError, match=r"file\.bin.*the partial download .*file\.bin\.part is kept"):
        download(f"{server}/file.bin", dest, [PAYLOAD_SUM], timeout=5)
    assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)  # never under the final name
    have = part.stat().st_size
    logs: list[str] = []
    assert download(f"{server}/file.bin", dest, [PAYLOAD_SUM], timeout=5, log=logs.append) == dest
    assert Handler.ranges == [None, f"bytes={have}-"] and logs == [f"resuming file.bin at {have} bytes"]
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_download_restarts_when_range_is_ignored(server, tmp_path) -> None:
    Handler.cut_first, Handler.ignore_range = False, True
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"stale bytes")
    download(f"{server}/file.bin", dest, [PAYLOAD_SUM], timeout=5)
    assert dest.read_bytes() == PAYLOAD


def test_download_checksum_mismatch_and_http_errors(server, tmp_path) -> None:
    Handler.cut_first = False
    dest = tmp_path / "file.bin"
    wrong = Checksum("0" * 64, len(PAYLOAD), "made up for the test")
    with pytest.raises(DataError, match="expected SHA-256 0{64} .*matches none; the download was deleted"):
        download(f"{server}/file.bin", dest, [wrong], timeout=5)
    assert not dest.exists() and not dest.with_name("file.bin.part").exists()
    with pytest.raises(DataError, match="HTTP error 404"):
        download(f"{server}/missing.bin", dest, timeout=5)
    assert not dest.exists()


def test_download_file_url(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "copy.bin"
    download(src.as_uri(), dest, [PAYLOAD_SUM])
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "out" / "copy.bin.part").exists()
    with pytest.raises(DataError, match="found the download failed"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


# --- stcsnn data info ---------------------------------------------------------------------------------------

def test_info_usable_and_missing(tmp_path, capsys) -> None:
    assert main(["data", "info", "mmnist", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "train-images-idx3-ubyte.gz  MISSING" in out and "mnist_test_seq.npy  MISSING" in out
    assert "NOT usable as found" in out
    mmnist_files(tmp_path)
    assert main(["data", "info", "mmnist", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "IDX uint8 (4, 28, 28)" in out and "uint8 (20, 2, 64, 64)" in out
    assert "sha256 DIFFERS from the published file(s) (9912422 bytes)" in out  # a tiny stand-in, not MNIST
    assert "split    test   2 sequences, inputs (10, 1, 64, 64), targets (10, 1, 64, 64), float32" in out
    assert "status   usable" in out


def test_info_truncated_test_file(tmp_path, capsys) -> None:
    mmnist_files(tmp_path)
    path = tmp_path / "moving_mnist" / "mnist_test_seq.npy"
    path.write_bytes(path.read_bytes()[:5000])
    assert main(["data", "info", "mmnist", "--root", str(tmp_path), "--no-checksum"]) == 1
    out = capsys.readouterr().out
    assert "UNREADABLE" in out and "the file is truncated" in out and "NOT USABLE" in out


def test_info_embedded_npy_and_errors(tmp_path, capsys) -> None:
    assert main(["data", "info", "embedded"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist_subset.npz  present" in out and "train_images uint8 (2000, 28, 28)" in out
    assert "MIT license" in out and "status   usable" in out
    np.save(tmp_path / "v.npy", np.zeros((10, 6, 8, 8), np.uint8))
    assert main(["data", "info", "npy", "-O", f"path={tmp_path / 'v.npy'}", "-O", "input_frames=2"]) == 0
    assert "inputs (2, 1, 8, 8), targets (4, 1, 8, 8)" in capsys.readouterr().out
    assert main(["data", "info", "npy"]) == 1
    assert "expected the option path" in capsys.readouterr().out
    assert main(["data", "info", "mnist"]) == 2
    assert "unknown dataset 'mnist' (did you mean 'mmnist'?)" in one_line_error(capsys)
    assert main(["data", "info", "npy", "-O", "oops"]) == 2
    assert "expected KEY=VALUE" in one_line_error(capsys)


def test_info_kth_and_taxibj(tmp_path, capsys) -> None:
    from PIL import Image

    for person in ("01", "16", "17"):
        d = tmp_path / "kth" / "boxing" / f"person{person}_boxing_d1_uncomp"
        d.mkdir(parents=True)
        for k in range(1, 31):
            Image.new("L", (16, 12), k).save(d / f"image_{k:04d}.jpg")
    assert main(["data", "info", "kth", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kth/boxing  present, 3 video folders" in out
    assert "kth/{handclapping,handwaving,walking,jogging,running}  MISSING" in out
    assert "split    val    1 sequences, inputs (10, 1, 128, 128), targets (20, 1, 128, 128)" in out
    (tmp_path / "taxibj").mkdir()
    z = np.zeros((3, 4, 2, 32, 32), np.float32)
    np.savez(tmp_path / "taxibj" / "dataset.npz", X_train=z, Y_train=z, X_test=z, Y_test=z)
    assert main(["data", "info", "taxibj", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "X_train float32 (3, 4, 2, 32, 32)" in out and "no published checksum" in out


# --- stcsnn data prepare ------------------------------------------------------------------------------------

def with_files(monkeypatch, name: str, *specs: FileSpec) -> None:
    def files(root):
        from stcsnn.data.base import resolve_root
        return [(s, resolve_root(root) / s.path) for s in specs]
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], files=files))


def test_prepare_offline_prints_manual_instructions(tmp_path, capsys, monkeypatch) -> None:
    unreachable = "http://127.0.0.1:9/mnist_test_seq.npy"  # the discard port: nothing listens there
    spec = dataclasses.replace(DATASETS["mmnist"].files(None)[1][0], urls=(unreachable,))
    with_files(monkeypatch, "mmnist", spec)
    assert main(["data", "prepare", "mmnist", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"failed   {unreachable}: expected to download mnist_test_seq.npy, found the download failed" \
        in err
    assert "get them by hand and put them in place" in err
    assert str(tmp_path / "moving_mnist/mnist_test_seq.npy") in err
    assert "sha256 c2a3e8d3939c001ab77bf543f130157424efa486bb4d0974d2cebb773b13f8b3 (819200096 bytes" in err
    assert not list((tmp_path / "moving_mnist").iterdir())  # nothing written in place of a good file


def test_prepare_downloads_verifies_and_unpacks(tmp_path, capsys, monkeypatch) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "train.gz").write_bytes(PAYLOAD)
    z = np.zeros((3, 4, 2, 32, 32), np.float32)
    np.savez(src / "dataset.npz", X_train=z, Y_train=z, X_test=z, Y_test=z)
    with zipfile.ZipFile(src / "taxibj_dataset.zip", "w") as zf:
        zf.write(src / "dataset.npz", "taxibj_dataset/dataset.npz")  # one enclosing folder, stripped
    root = tmp_path / "root"
    plain = FileSpec("moving_mnist/train.gz", ((src / "nope").as_uri(), (src / "train.gz").as_uri()),
                     (PAYLOAD_SUM,))
    with_files(monkeypatch, "mmnist", plain)
    assert main(["data", "prepare", "mmnist", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "sha256 verified" in out and (root / "moving_mnist/train.gz").read_bytes() == PAYLOAD
    assert main(["data", "prepare", "mmnist", "--root", str(root)]) == 0
    assert "already present, sha256 ok (test)" in capsys.readouterr().out
    (root / "moving_mnist/train.gz").write_bytes(b"something else")
    assert main(["data", "prepare", "mmnist", "--root", str(root)]) == 1
    assert "delete it and run again" in capsys.readouterr().err
    archive = dataclasses.replace(DATASETS["taxibj"].files(None)[0][0],
                                  urls=((src / "taxibj_dataset.zip").as_uri(),))
    with_files(monkeypatch, "taxibj", archive)
    assert main(["data", "prepare", "taxibj", "--root", str(root)]) == 0
    assert "no published checksum" in capsys.readouterr().out
    assert (root / "taxibj/dataset.npz").is_file() and not (root / "taxibj/taxibj_dataset.zip").exists()
    assert main(["data", "info", "taxibj", "--root", str(root)]) == 0


def test_prepare_nothing_to_download(capsys) -> None:
    assert main(["data", "prepare", "embedded"]) == 0
    assert "nothing to download" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert "mfmnist" in capsys.readouterr().out


def test_commands_read_the_spec_not_the_name(tmp_path, capsys, monkeypatch) -> None:
    """A dataset the commands have never heard of: `prepare` and `info` follow its spec's fields."""
    toy = dataclasses.replace(DATASETS["embedded"], name="toy", description="a toy", local="is a toy",
                              describe_files=lambda root: [f"file     toy.npz  present (root {root})"])
    monkeypatch.setitem(DATASETS, "toy", toy)
    assert main(["data", "prepare", "toy"]) == 0
    assert capsys.readouterr().out == "toy: nothing to download, this dataset is a toy\n"
    opts = ["-O", "num_samples=2", "-O", "val_samples=1", "-O", "test_samples=1", "-O", "canvas_size=32"]
    assert main(["data", "info", "toy", "--root", str(tmp_path), *opts]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["dataset  toy: a toy", f"file     toy.npz  present (root {tmp_path})"]
    assert not any(line.startswith("root ") for line in out)  # its describe_files replaces the root line
    assert "split    val    1 sequences, inputs (10, 1, 32, 32), targets (10, 1, 32, 32)" in "\n".join(out)
    # files under the data root (no describe_files): the root is shown and its files are listed
    monkeypatch.setitem(DATASETS, "toy", dataclasses.replace(toy, describe_files=None, local="",
                                                             files=DATASETS["taxibj"].files))
    assert main(["data", "info", "toy", "--root", str(tmp_path), *opts]) == 0
    out = capsys.readouterr().out
    assert f"root     {tmp_path.absolute()} (given)" in out
    assert f"file     {tmp_path / 'taxibj' / 'dataset.npz'}  MISSING" in out and "`stcsnn data prepare toy`" in out
