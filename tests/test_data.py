"""Datasets through their real loaders, on tiny files written in the real formats (IDX, npy, npz, jpg)."""

from __future__ import annotations

import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import stcsnn
from stcsnn.config import make_config
from stcsnn.data import (
    DATASETS,
    SPLITS,
    build_dataset,
    frame_shape_of,
    list_datasets,
    register_dataset,
    resolve_config_shape,
    resolve_root,
)
from stcsnn.data.formats import read_idx
from stcsnn.data.kth import resize_bilinear, sequence_starts
from stcsnn.data.moving import DEBIAN_FASHION_MNIST, moving_sequence, trajectory
from stcsnn.errors import ConfigError, DataError
from tests.helpers import load_file

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> Path:
    """An IDX file: 0x0000, type 0x08 (uint8), ndim, big-endian uint32 dims, the bytes."""
    raw = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def digits(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def check_item(ds, t_in: int, t_out: int, shape: tuple[int, int, int]) -> None:
    x, y = ds[0]
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert tuple(x.shape) == (t_in, *shape) and tuple(y.shape) == (t_out, *shape)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert ds.frame_shape == shape and ds.input_frames == t_in and ds.output_frames == t_out
    ds.set_epoch(3)  # every dataset has it


# --- registry, root -----------------------------------------------------------------------------------------

def test_registry_and_errors() -> None:
    assert [n for n, _ in list_datasets()] == list(DATASETS)
    assert {"mmnist", "mfmnist", "taxibj", "kth", "npy", "embedded"} <= set(DATASETS)
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*did you mean 'mmnist'.*expected one of"):
        build_dataset("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'valid': expected one of train, val, test"):
        build_dataset("embedded", "valid")
    with pytest.raises(DataError, match="unknown option.*'frames'.*expected some of"):
        build_dataset("embedded", "train", frames=3)


def test_a_name_is_registered_once() -> None:
    with pytest.raises(DataError, match="dataset 'taxibj' is registered twice"):
        register_dataset(DATASETS["taxibj"])
    assert list(DATASETS)[-1] == "npy"  # nothing was added


def test_frame_shape_of_a_config_comes_from_the_spec() -> None:
    assert frame_shape_of(make_config({"dataset": "mmnist"})) == (1, 64, 64)
    assert frame_shape_of(make_config({"dataset": "embedded", "data_options": {"canvas_size": 32}})) == (1, 32, 32)
    assert frame_shape_of(make_config({"dataset": "kth", "data_options": {"image_size": 64}})) == (1, 64, 64)
    assert frame_shape_of(make_config({"dataset": "kth"})) == (1, 128, 128)
    assert frame_shape_of(make_config({"dataset": "taxibj", "patch_size": 1})) == (2, 32, 32)
    # a shape the config gives wins; npy's shape is unknown without the data
    assert frame_shape_of(make_config({"dataset": "embedded", "frame_shape": [1, 16, 16]})) == (1, 16, 16)
    assert frame_shape_of(make_config({"dataset": "npy", "frame_shape": [3, 8, 8]})) == (3, 8, 8)
    with pytest.raises(ConfigError, match="frame shape of dataset 'npy' is unknown without its data: expected "
                                          r"frame_shape: \[C, H, W\] in the config"):
        frame_shape_of(make_config({"dataset": "npy", "data_options": {"path": "videos.npy"}}))
    with pytest.raises(DataError, match="canvas_size must be an integer >= 1, found 'big'"):
        frame_shape_of(make_config({"dataset": "mmnist", "data_options": {"canvas_size": "big"}}))


def test_resolve_config_shape_fills_only_the_frame_shape() -> None:
    cfg = make_config({"dataset": "embedded", "data_options": {"canvas_size": 32}})
    filled = resolve_config_shape(cfg)
    assert cfg.frame_shape is None and filled.frame_shape == [1, 32, 32]
    assert filled.to_dict() == {**cfg.to_dict(), "frame_shape": [1, 32, 32]}
    assert resolve_config_shape(filled) is filled


def test_spec_shape_and_frames_are_those_of_the_built_dataset(tmp_path) -> None:
    """What a spec declares without data (model building reads it) is what its loader builds."""
    write_taxibj(tmp_path)
    write_kth(tmp_path, {"boxing/person16_boxing_d1_uncomp": 30})  # person 16: the validation split
    cases = [("embedded", "train", {"num_samples": 2}), ("embedded", "test", {"test_samples": 2, "canvas_size": 36}),
             ("taxibj", "train", {}), ("kth", "val", {}), ("kth", "val", {"image_size": 32})]
    for name, split, options in cases:
        spec, ds = DATASETS[name], build_dataset(name, split, root=tmp_path, **options)
        assert spec.frame_shape(options) == ds.frame_shape, (name, options)
        assert (spec.input_frames, spec.output_frames) == (ds.input_frames, ds.output_frames), name
    assert DATASETS["npy"].frame_shape({}) is None and DATASETS["npy"].input_frames is None


def test_models_layer_needs_a_frame_shape_the_package_fills_it() -> None:
    from stcsnn.models import build_model

    cfg = make_config({"dataset": "embedded", "neuron": "lif", "hidden_channels": [16], "kernel_size": 3,
                       "patch_size": 4, "input_frames": 2, "output_frames": 1, "data_options": {"canvas_size": 32}})
    with pytest.raises(ConfigError, match=r"frame shape is unknown: .*found neither; stcsnn\.build_model\(cfg\) or "
                                          r"stcsnn\.data\.resolve_config_shape\(cfg\) fills it"):
        build_model(cfg)
    assert build_model(cfg, frame_shape=(2, 16, 16)).frame_channels == 2
    assert build_model(make_config({**cfg.to_dict(), "frame_shape": [3, 16, 16]})).frame_channels == 3
    with pytest.raises(ConfigError, match=r"frame_shape must be \[C, H, W\] of integers >= 1, found \[1, 16\]"):
        build_model(cfg, frame_shape=(1, 16))
    torch.manual_seed(0)
    model = stcsnn.build_model(cfg)  # the embedded spec's shape for canvas_size 32
    assert tuple(model(torch.zeros(1, 2, 1, 32, 32), n_future=1).shape) == (1, 1, 1, 32, 32)
    with pytest.raises(ConfigError, match="frame shape of dataset 'npy' is unknown"):
        stcsnn.build_model(make_config({**cfg.to_dict(), "dataset": "npy", "data_options": {}}))


def test_make_configs_reproduces_the_committed_configs(tmp_path, monkeypatch) -> None:
    """scripts/make_configs.py reads the specs' default frames and reference settings: the configs it writes
    hold the same settings as the committed ones (header comments aside, which quote neuron descriptions)."""

    import yaml

    script = load_file(REPO / "scripts" / "make_configs.py", "make_configs")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    script.main()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert {p.parts[0] for p in written} == {"mmnist", "mfmnist", "taxibj", "kth"}
    for rel in written:
        assert yaml.safe_load((tmp_path / rel).read_text()) == yaml.safe_load((REPO / "configs" / rel).read_text()), rel


def test_resolve_root(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("STCSNN_DATA", raising=False)
    assert resolve_root(None) == Path("data")
    monkeypatch.setenv("STCSNN_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root(tmp_path / "x") == tmp_path / "x"


# --- IDX and npy formats ------------------------------------------------------------------------------------

def test_read_idx_gz_and_raw(tmp_path) -> None:
    imgs = digits(5)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", imgs), ndim=3), imgs)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.idx", imgs, compress=False), ndim=3), imgs)


def test_read_idx_bad_files(tmp_path) -> None:
    good = write_idx(tmp_path / "good.gz", digits(4))
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing.gz")
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"trunc\.gz: expected a readable.*corrupt or truncated"):
        read_idx(trunc)
    short = tmp_path / "short.idx"
    short.write_bytes(gzip.decompress(good.read_bytes())[:-100])
    with pytest.raises(DataError, match=r"expected 3152 bytes.*found 3052; the file is truncated"):
        read_idx(short, ndim=3)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match="magic.*found first bytes 12345678"):
        read_idx(bad)
    labels = write_idx(tmp_path / "labels.gz", np.arange(4))
    with pytest.raises(DataError, match="3 dimensions.*found 1.*labels file"):
        read_idx(labels, ndim=3)


# --- Moving MNIST generator statistics ----------------------------------------------------------------------

def test_trajectory_bounds_speed_and_bounces() -> None:
    bounces = full_steps = 0
    for k in range(300):
        pos = trajectory(np.random.default_rng([7, k]), 40)
        assert pos.min() >= 0.0 and pos.max() <= 1.0
        at_border = (pos == 0.0) | (pos == 1.0)
        v, flip = None, np.zeros(2, bool)
        for t in range(1, len(pos)):
            step = pos[t] - pos[t - 1]
            assert np.linalg.norm(step) <= 0.1 + 1e-12
            flip ^= at_border[t - 1]  # clamped at a border: that velocity component flips
            if at_border[t].any():
                continue  # a step into a border is cut short by the clamp
            assert np.linalg.norm(step) == pytest.approx(0.1, abs=1e-12)  # 3.6 px on a 64 canvas
            full_steps += 1
            if v is not None:
                assert np.allclose(step, np.where(flip, -v, v), atol=1e-12)
                bounces += int(flip.any())
            v, flip = step, np.zeros(2, bool)
    assert bounces > 50 and full_steps > 5000


def test_moving_sequence_two_objects_on_canvas() -> None:
    squares = np.full((3, 28, 28), 255, np.uint8)
    for canvas in (64, 40):
        frames, pos, idx = moving_sequence(squares, np.random.default_rng(1), 20, 2, canvas)
        assert frames.shape == (20, canvas, canvas) and frames.dtype == np.uint8 and idx.shape == (2,)
        span = canvas - 28
        px = (pos * span).astype(np.int32)
        assert px.min() >= 0 and px.max() <= span
        for t in range(20):
            expected = np.zeros((canvas, canvas), np.uint8)
            for d in range(2):
                expected[px[d, t, 0]: px[d, t, 0] + 28, px[d, t, 1]: px[d, t, 1] + 28] = 255
            assert np.array_equal(frames[t], expected)  # two 28x28 objects, combined with max


def test_moving_sequence_uses_pixelwise_max() -> None:
    imgs = np.stack([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    frames, _, idx = moving_sequence(imgs, np.random.default_rng(3), 5, 2, 30)  # 30: the digits overlap
    assert set(np.unique(frames)) <= {0, 100, 200}
    assert frames.max() == imgs[idx].max()


# --- mmnist, mfmnist, embedded ------------------------------------------------------------------------------

@pytest.fixture
def mmnist_root(tmp_path) -> Path:
    write_idx(tmp_path / "moving_mnist" / "train-images-idx3-ubyte.gz", digits(12))
    seq = np.random.default_rng(0).integers(0, 256, size=(20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "moving_mnist" / "mnist_test_seq.npy", seq)
    return tmp_path


def test_mmnist_real_files(mmnist_root) -> None:
    train = build_dataset("mmnist", "train", root=mmnist_root, num_samples=7)
    assert len(train) == 7 and train.name == "mmnist"
    check_item(train, 10, 10, (1, 64, 64))
    val = build_dataset("mmnist", "val", root=mmnist_root, val_samples=4)
    assert len(val) == 4
    check_item(val, 10, 10, (1, 64, 64))
    test = build_dataset("mmnist", "test", root=mmnist_root)
    assert len(test) == 3
    check_item(test, 10, 10, (1, 64, 64))
    raw = np.load(mmnist_root / "moving_mnist" / "mnist_test_seq.npy")
    x, y = test[2]
    assert torch.equal(torch.cat([x, y])[:, 0], torch.from_numpy(raw[:, 2] / 255.0).float())
    blob = pickle.dumps(test)  # DataLoader workers (spawn): the memory map is reopened, not copied
    assert len(blob) < 2000 and torch.equal(pickle.loads(blob)[2][0], x)
    x, y = build_dataset("mmnist", "test", root=mmnist_root, input_frames=5, output_frames=3)[0]
    assert x.shape[0] == 5 and y.shape[0] == 3
    with pytest.raises(DataError, match="mnist_test_seq.npy: expected sequences of at least .* 21 frames, "
                                        "found 20"):
        build_dataset("mmnist", "test", root=mmnist_root, input_frames=11, output_frames=10)


def test_mmnist_truncated_test_file_refused(mmnist_root) -> None:
    path = mmnist_root / "moving_mnist" / "mnist_test_seq.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"mnist_test_seq\.npy: expected 245888 bytes for a uint8 array of "
                                        r"shape \(20, 3, 64, 64\).*found 122944 bytes; the file is "
                                        r"truncated"):
        build_dataset("mmnist", "test", root=mmnist_root)


def test_mmnist_missing_files(tmp_path) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: expected the train images.*no such "
                                        r"file; run `stcsnn data prepare mmnist`"):
        build_dataset("mmnist", "train", root=tmp_path)
    with pytest.raises(DataError, match="mmnist test split: expected the fixed test sequences .*mnist_test"):
        build_dataset("mmnist", "test", root=tmp_path)


def test_generation_is_reproducible_and_resumable(mmnist_root) -> None:
    train = build_dataset("mmnist", "train", root=mmnist_root, num_samples=5, canvas_size=40, seed=4)
    a = train[3]
    assert torch.equal(build_dataset("mmnist", "train", root=mmnist_root, canvas_size=40, seed=4)[3][0], a[0])
    train.set_epoch(1)
    b = train[3]
    assert not torch.equal(a[0], b[0])
    train.set_epoch(0)
    assert torch.equal(train[3][0], a[0])  # epoch e, item i: the same sequence whenever it is asked for
    images = read_idx(mmnist_root / "moving_mnist" / "train-images-idx3-ubyte.gz")
    frames, _, _ = moving_sequence(images, np.random.default_rng([4, 0, 0, 3]), 20, 2, 40)
    assert torch.equal(torch.cat(a)[:, 0], torch.from_numpy(frames / 255.0).float())
    val = build_dataset("mmnist", "val", root=mmnist_root, seed=123)
    v0 = val[0][0]
    val.set_epoch(5)
    assert torch.equal(val[0][0], v0)  # validation is fixed: not the epoch ...
    assert torch.equal(build_dataset("mmnist", "val", root=mmnist_root, seed=9)[0][0], v0)  # ... nor the seed


def test_nonstandard_test_needs_test_images(mmnist_root) -> None:
    with pytest.raises(DataError, match="test images .*t10k-images-idx3-ubyte.gz.*num_digits=3"):
        build_dataset("mmnist", "test", root=mmnist_root, num_digits=3)
    write_idx(mmnist_root / "moving_mnist" / "t10k-images-idx3-ubyte.gz", digits(6, seed=1))
    test = build_dataset("mmnist", "test", root=mmnist_root, num_digits=3, test_samples=4)
    assert len(test) == 4
    check_item(test, 10, 10, (1, 64, 64))


def test_mfmnist_real_files(tmp_path) -> None:
    write_idx(tmp_path / "moving_fmnist" / "train-images-idx3-ubyte.gz", digits(10))
    write_idx(tmp_path / "moving_fmnist" / "t10k-images-idx3-ubyte.gz", digits(5, seed=2))
    for split in SPLITS:
        ds = build_dataset("mfmnist", split, root=tmp_path, num_samples=3, val_samples=3, test_samples=3,
                           canvas_size=32)
        check_item(ds, 10, 10, (1, 32, 32))
    test = build_dataset("mfmnist", "test", root=tmp_path)
    assert test.source.endswith("t10k-images-idx3-ubyte.gz") and len(test) == 10000


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (no /usr/share/datasets/"
                           "fashion-mnist/)")
def test_mfmnist_from_debian_fashion_mnist(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("STCSNN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data here: the Debian files are found
    train = build_dataset("mfmnist", "train", num_samples=4)
    assert train.images.shape == (60000, 28, 28) and str(DEBIAN_FASHION_MNIST) in train.source
    test = build_dataset("mfmnist", "test", test_samples=4)
    assert test.images.shape == (10000, 28, 28)
    for ds in (train, test):
        check_item(ds, 10, 10, (1, 64, 64))
        x, y = ds[1]
        assert float(torch.cat([x, y]).amax(dim=(1, 2, 3)).min()) > 0.2  # real images in every frame


def test_embedded_dataset() -> None:
    sizes = {"train": 2000, "val": 300, "test": 300}
    for split in SPLITS:
        ds = build_dataset("embedded", split)
        assert len(ds) == sizes[split] and ds.name == "embedded"
        check_item(ds, 10, 10, (1, 64, 64))
        x, y = ds[len(ds) - 1]
        assert float(x.max()) > 0.5 and float(x.mean()) > 0.01
    assert build_dataset("embedded", "train").images.shape == (2000, 28, 28)
    assert build_dataset("embedded", "test").images.shape == (500, 28, 28)
    small = build_dataset("embedded", "train", num_samples=3, canvas_size=36, input_frames=4, output_frames=2)
    check_item(small, 4, 2, (1, 36, 36))
    with pytest.raises(DataError, match="canvas_size > the 28x28 images, found 28"):
        build_dataset("embedded", "train", canvas_size=28)
    with pytest.raises(DataError, match="input_frames must be an integer >= 1, found 0"):
        build_dataset("embedded", "train", input_frames=0)


# --- TaxiBJ -------------------------------------------------------------------------------------------------

def write_taxibj(root: Path, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {k: rng.uniform(-1, 1, size=(n, 4, 2, 32, 32))
              for k, n in (("X_train", 10), ("Y_train", 10), ("X_test", 3), ("Y_test", 3))}
    arrays.update(override)
    (root / "taxibj").mkdir(parents=True, exist_ok=True)
    np.savez(root / "taxibj" / "dataset.npz", **arrays)
    return root / "taxibj" / "dataset.npz"


def test_taxibj_real_file(tmp_path) -> None:
    path = write_taxibj(tmp_path)
    raw = np.load(path)
    sizes = {"train": 9, "val": 1, "test": 3}
    for split in SPLITS:
        ds = build_dataset("taxibj", split, root=tmp_path)
        assert len(ds) == sizes[split]
        check_item(ds, 4, 4, (2, 32, 32))
    x, y = build_dataset("taxibj", "val", root=tmp_path)[0]  # the last training sample
    assert torch.equal(x, torch.from_numpy((raw["X_train"][9] + 1) / 2).float())  # as OpenSTL computes it
    assert torch.equal(y, torch.from_numpy((raw["Y_train"][9] + 1) / 2).float())
    x, y = build_dataset("taxibj", "test", root=tmp_path, input_frames=3, output_frames=5)[2]
    seq = np.concatenate([raw["X_test"][2], raw["Y_test"][2]])
    assert torch.equal(torch.cat([x, y]), torch.from_numpy((seq + 1) / 2).float())


def test_taxibj_bad_files(tmp_path) -> None:
    with pytest.raises(DataError, match=r"taxibj/dataset\.npz: expected OpenSTL's TaxiBJ .*no such file"):
        build_dataset("taxibj", "train", root=tmp_path)
    bad = np.zeros((3, 4, 2, 32, 32))
    bad[1, 0, 0, 0, 0] = 1.5
    write_taxibj(tmp_path, X_test=bad)
    with pytest.raises(DataError, match=r"dataset\.npz \(test part\): expected values in \[-1, 1\], found "
                                        r"\[-0\.99\d*, 1\.5\]"):
        build_dataset("taxibj", "test", root=tmp_path)
    bad[1, 0, 0, 0, 0] = np.nan
    write_taxibj(tmp_path, X_test=bad)
    with pytest.raises(DataError, match="expected finite values, found 1 NaN/infinite"):
        build_dataset("taxibj", "test", root=tmp_path)
    write_taxibj(tmp_path, X_test=np.zeros((3, 4, 32, 32)))
    with pytest.raises(DataError, match=r"expected X_test as a numeric array \(N, T, 2, 32, 32\), found "
                                        r"float64 \(3, 4, 32, 32\)"):
        build_dataset("taxibj", "test", root=tmp_path)
    path = tmp_path / "taxibj" / "dataset.npz"
    np.savez(path, X_train=np.zeros((2, 4, 2, 32, 32)))
    with pytest.raises(DataError, match="expected arrays X_train, Y_train, found X_train.*missing Y_train"):
        build_dataset("taxibj", "train", root=tmp_path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"expected an \.npz \(zip\) archive, found a corrupt or truncated"):
        build_dataset("taxibj", "train", root=tmp_path)


# --- KTH ----------------------------------------------------------------------------------------------------

def write_kth(root: Path, videos: dict[str, int]) -> None:
    """``{"boxing/person01_boxing_d1_uncomp": n_frames}``: RGB JPEGs whose gray level encodes the frame."""
    from PIL import Image

    for rel, n in videos.items():
        d = root / "kth" / rel
        d.mkdir(parents=True)
        for k in range(1, n + 1):
            Image.new("RGB", (20, 15), (4 * k, 4 * k, 4 * k)).save(d / f"image_{k:04d}.jpg", quality=95)


def test_kth_sequence_starts_follow_openstl() -> None:
    assert sequence_starts(list(range(1, 66)), 30, stride3=False) == [5, 35]
    assert sequence_starts(list(range(1, 36)), 30, stride3=True) == [2, 5]
    assert sequence_starts(list(range(1, 30)), 30, stride3=False) == []
    gap = list(range(1, 31)) + list(range(40, 50))  # frames 31..39 missing: only the first 30 are contiguous
    assert sequence_starts(gap, 30, stride3=False) == [0]


def test_resize_bilinear_matches_pixel_centre_rule() -> None:
    img = np.array([[0.0, 1.0]], np.float32)
    assert np.allclose(resize_bilinear(np.repeat(img, 2, 0), 4)[0], [0, 0.25, 0.75, 1])
    x = np.random.default_rng(0).random((5, 5)).astype(np.float32)
    assert np.allclose(resize_bilinear(x, 5), x)


def test_kth_real_frame_folders(tmp_path) -> None:
    write_kth(tmp_path, {"boxing/person01_boxing_d1_uncomp": 62, "jogging/person02_jogging_d1_uncomp": 35,
                         "walking/person16_walking_d2_uncomp": 31,
                         "handwaving/person17_handwaving_d1_uncomp": 30})
    train = build_dataset("kth", "train", root=tmp_path, image_size=32)
    assert len(train) == 2 + 2  # boxing: 62 frames -> 2 windows; jogging: 35 frames, stride 3 -> 2 windows
    check_item(train, 10, 20, (1, 32, 32))
    x, y = train[0]  # boxing, frames 3..32 (windows counted back from the last frame)
    levels = torch.cat([x, y]).mean(dim=(1, 2, 3)) * 255 / 4
    assert torch.allclose(levels, torch.arange(3, 33).float(), atol=0.5)
    assert len(build_dataset("kth", "val", root=tmp_path)) == 1  # person 16
    test = build_dataset("kth", "test", root=tmp_path)
    assert len(test) == 1
    check_item(test, 10, 20, (1, 128, 128))
    assert len(build_dataset("kth", "val", root=tmp_path, val_persons="02", image_size=16)) == 2
    with pytest.raises(DataError, match="persons 17, .* at least 31 consecutive frames .* at most 30 frames"):
        build_dataset("kth", "test", root=tmp_path, input_frames=11)


def test_kth_bad_inputs(tmp_path, monkeypatch) -> None:
    with pytest.raises(DataError, match=r"kth: expected OpenSTL's KTH frame folders .* found none; run"):
        build_dataset("kth", "train", root=tmp_path)
    write_kth(tmp_path, {"running/person03_running_d1_uncomp": 30})
    frame = tmp_path / "kth/running/person03_running_d1_uncomp/image_0007.jpg"
    frame.write_bytes(frame.read_bytes()[:40])
    ds = build_dataset("kth", "train", root=tmp_path)
    with pytest.raises(DataError, match=r"image_0007\.jpg: expected a readable JPEG frame, found a corrupt"):
        ds[0]
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="needs Pillow.*pip install pillow"):
        ds[0]


# --- npy: the user's own arrays -----------------------------------------------------------------------------

def test_npy_uint8_fractions_and_windows(tmp_path) -> None:
    videos = np.random.default_rng(0).integers(0, 256, size=(10, 6, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "v.npy", videos)
    sizes = {"train": 8, "val": 1, "test": 1}
    for split in SPLITS:
        ds = build_dataset("npy", split, path=str(tmp_path / "v.npy"))
        assert len(ds) == sizes[split]
        check_item(ds, 3, 3, (1, 8, 8))
    x, y = build_dataset("npy", "test", path=tmp_path / "v.npy", input_frames=2, output_frames=4)[0]
    assert torch.equal(torch.cat([x, y])[:, 0], torch.from_numpy(videos[9] / 255.0).float())
    windows = build_dataset("npy", "train", path=tmp_path / "v.npy", input_frames=2, output_frames=2,
                            stride=1)
    assert len(windows) == 8 * 3
    x, _ = windows[4]  # video 1, frames 1..
    assert torch.equal(x[:, 0], torch.from_numpy(videos[1, 1:3] / 255.0).float())


def test_npy_float_ranges_and_normalize(tmp_path) -> None:
    data = np.random.default_rng(0).normal(size=(10, 4, 2, 8, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", data)
    with pytest.raises(DataError, match=r"f\.npy \(videos 0\.\.7\): expected values in \[0, 1\], found .*"
                                        r"set normalize='minmax'"):
        build_dataset("npy", "train", path=tmp_path / "f.npy")
    ds = build_dataset("npy", "val", path=tmp_path / "f.npy", normalize="minmax")
    check_item(ds, 2, 2, (2, 8, 8))
    lo, hi = data[:8].min(), data[:8].max()
    x, _ = build_dataset("npy", "train", path=tmp_path / "f.npy", normalize="minmax")[0]
    assert torch.allclose(x, torch.from_numpy((data[0, :2] - lo) / (hi - lo)), atol=1e-6)
    data[9, 1, 0, 0, 0] = np.inf
    np.save(tmp_path / "f.npy", data)
    with pytest.raises(DataError, match="expected finite values, found 1 NaN/infinite"):
        build_dataset("npy", "test", path=tmp_path / "f.npy", normalize="minmax")


def test_npy_npz_splits_and_separate_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    parts = {s: rng.random((n, 5, 1, 4, 4)).astype(np.float32)
             for s, n in (("train", 3), ("val", 2), ("test", 1))}
    np.savez(tmp_path / "s.npz", **parts)
    for s, arr in parts.items():
        ds = build_dataset("npy", s, path=tmp_path / "s.npz", input_frames=3, output_frames=2)
        assert len(ds) == len(arr)
        assert torch.allclose(torch.cat(ds[0]), torch.from_numpy(arr[0]))
    for s, arr in parts.items():
        np.save(tmp_path / f"{s}.npy", arr)
    ds = build_dataset("npy", "val", train_path=tmp_path / "train.npy", val_path=tmp_path / "val.npy")
    assert len(ds) == 2 and ds.input_frames == 2 and ds.output_frames == 3
    with pytest.raises(DataError, match="the test split needs the option test_path"):
        build_dataset("npy", "test", train_path=tmp_path / "train.npy")
    np.savez(tmp_path / "two.npz", a=parts["train"], b=parts["val"])
    with pytest.raises(DataError, match="expected a single array or the option key.*found arrays a, b"):
        build_dataset("npy", "train", path=tmp_path / "two.npz")
    ds = build_dataset("npy", "test", path=tmp_path / "two.npz", key="a", split_fractions=(0.34, 0.33, 0.33))
    assert len(ds) == 1


def test_npy_bad_inputs(tmp_path) -> None:
    with pytest.raises(DataError, match="expected the option path"):
        build_dataset("npy", "train")
    with pytest.raises(DataError, match=r"nope\.npy: expected a \.npy or \.npz array of videos.*no such"):
        build_dataset("npy", "train", path=tmp_path / "nope.npy")
    np.save(tmp_path / "flat.npy", np.zeros((10, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"expected a numeric array of videos \(N, T, C, H, W\) or "
                                        r"\(N, T, H, W\), found uint8 \(10, 8, 8\)"):
        build_dataset("npy", "train", path=tmp_path / "flat.npy")
    np.save(tmp_path / "short.npy", np.zeros((10, 6, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"short\.npy: expected sequences of at least .* = 8 frames, found 6"):
        build_dataset("npy", "train", path=tmp_path / "short.npy", input_frames=4, output_frames=4)
    with pytest.raises(DataError, match="expected enough videos .* found 10 .*1/0/9"):
        build_dataset("npy", "train", path=tmp_path / "short.npy", split_fractions=(0.1, 0.01, 0.89))
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="found dtype object"):
        build_dataset("npy", "train", path=tmp_path / "obj.npy")
    raw = (tmp_path / "short.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="the file is truncated"):
        build_dataset("npy", "train", path=tmp_path / "short.npy")
    with pytest.raises(DataError, match="normalize must be one of"):
        build_dataset("npy", "train", path=tmp_path / "flat.npy", normalize="zscore")


def test_dataloader_batches(tmp_path) -> None:
    ds = build_dataset("embedded", "val", val_samples=6, canvas_size=32)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 10, 1, 32, 32) and y.shape == (3, 10, 1, 32, 32)
    assert os.fspath(resolve_root(tmp_path)) == os.fspath(tmp_path)
