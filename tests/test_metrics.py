"""stcsnn.metrics against independent NumPy / scikit-image references of OpenSTL's definitions."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from stcsnn import metrics as M
from stcsnn.errors import StcsnnError
from stcsnn.metrics import MetricAccumulator, evaluate

structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity

RTOL = 1e-5
ALL = ("mse", "mae", "ssim", "psnr")


def reference(pred: np.ndarray, true: np.ndarray, data_range: float = 2.0) -> dict[str, np.ndarray]:
    """Per-frame (N, T) values computed the way OpenSTL does, with NumPy and scikit-image (float64)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    n, t = pred.shape[:2]
    out = {
        "mse": ((pred - true) ** 2).sum(axis=(2, 3, 4)),
        "mae": np.abs(pred - true).sum(axis=(2, 3, 4)),
    }
    pc = np.clip(pred, 0.0, 1.0)
    mse_mean = ((pc - true) ** 2).mean(axis=(2, 3, 4))
    with np.errstate(divide="ignore"):
        psnr = np.where(mse_mean == 0, np.inf, 20.0 * np.log10(1.0 / np.sqrt(mse_mean)))
    out["psnr"] = np.minimum(psnr, M.PSNR_CAP_DB)
    out["ssim"] = np.array(
        [
            structural_similarity(pc[i, k], true[i, k], channel_axis=0, data_range=data_range)
            for i in range(n)
            for k in range(t)
        ]
    ).reshape(n, t)
    return out


def assert_matches(result: dict, ref: dict[str, np.ndarray], names=ALL, rtol: float = RTOL) -> None:
    for name in names:
        np.testing.assert_allclose(result[name], ref[name].mean(), rtol=rtol, atol=1e-12, err_msg=name)
        if "per_horizon" in result:
            np.testing.assert_allclose(
                result["per_horizon"][name], ref[name].mean(axis=0), rtol=rtol, atol=1e-12, err_msg=name
            )


def noisy_pair(rng: np.random.Generator, shape, noise: float = 0.1, dtype=np.float64):
    true = rng.random(shape).astype(dtype)
    pred = np.clip(true + noise * rng.standard_normal(shape), -0.2, 1.2).astype(dtype)
    return pred, true


# ---------------------------------------------------------------- agreement with the references


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_range", [2.0, 1.0])
def test_random_inputs_match_reference(channels, dtype, data_range):
    rng = np.random.default_rng(channels)
    pred, true = noisy_pair(rng, (3, 4, channels, 16, 13), dtype=dtype)
    result = evaluate(pred, true, data_range=data_range, per_horizon=True)
    assert_matches(result, reference(pred, true, data_range))


def test_independent_random_frames_match_reference():
    rng = np.random.default_rng(7)
    pred, true = rng.random((2, 3, 1, 12, 12)), rng.random((2, 3, 1, 12, 12))
    assert_matches(evaluate(pred, true, per_horizon=True), reference(pred, true))
    assert_matches(evaluate(pred, true, data_range=1.0), reference(pred, true, 1.0))


def _structured_pairs():
    h, w = 24, 20
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    ramp = np.stack([xx, yy])  # 2 channels (TaxiBJ-like)
    blob = np.exp(-((xx - 0.4) ** 2 + (yy - 0.5) ** 2) / 0.02)
    pairs = {}
    # gradients: a ramp predicted by a flatter ramp and by its mirror image
    true = np.stack([ramp, ramp[:, ::-1]])  # (T=2, C=2, H, W)
    pred = np.stack([0.5 * ramp + 0.25, ramp[:, :, ::-1]])
    pairs["gradients"] = (pred[None], true[None])
    # shifted images: the prediction lags the moving blob by 1..3 pixels
    frames = np.stack([np.roll(blob, s, axis=1) for s in range(4)])[:, None]
    lagged = np.stack([np.roll(blob, max(s - 1 - s // 2, 0), axis=1) for s in range(4)])[:, None]
    pairs["shifted"] = (lagged[None], frames[None])
    # all-equal frames: constant images, equal and unequal (zero variance everywhere)
    const = np.full((1, 3, 1, 9, 11), 0.3)
    pairs["constant_vs_other_constant"] = (const, np.full_like(const, 0.7))
    pairs["constant_vs_blob"] = (const, np.broadcast_to(blob[:9, :11], const.shape).copy())
    # smallest legal frame and a binary (Moving-MNIST-like) pattern
    rng = np.random.default_rng(3)
    tiny_true = (rng.random((2, 2, 1, 7, 7)) > 0.7).astype(np.float64)
    pairs["7x7"] = (np.clip(tiny_true + 0.2 * rng.standard_normal(tiny_true.shape), 0, 1), tiny_true)
    return pairs


@pytest.mark.parametrize("case", list(_structured_pairs()))
@pytest.mark.parametrize("data_range", [2.0, 1.0])
def test_structured_inputs_match_reference(case, data_range):
    pred, true = _structured_pairs()[case]
    result = evaluate(pred, true, data_range=data_range, per_horizon=True)
    assert_matches(result, reference(pred, true, data_range))


def test_identical_frames():
    rng = np.random.default_rng(1)
    true = rng.random((2, 3, 2, 10, 10))
    result = evaluate(true, true.copy())
    assert result["mse"] == 0 and result["mae"] == 0
    assert result["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert result["psnr"] == pytest.approx(M.PSNR_CAP_DB)  # OpenSTL: inf; capped here
    # one perfect frame among imperfect ones keeps the average finite
    pred = true.copy()
    pred[0, 1] = np.clip(pred[0, 1] + 0.05, 0, 1)
    assert_matches(evaluate(pred, true), reference(pred, true))


def test_openstl_call_convention_equals_default():
    """OpenSTL's own call: frames transposed with swapaxes(0, 2), channel last, float data_range 2.0."""
    rng = np.random.default_rng(5)
    pred, true = noisy_pair(rng, (2, 3, 2, 14, 9))
    pc = np.clip(pred, 0, 1)
    openstl = np.mean(
        [
            structural_similarity(
                pc[b, f].swapaxes(0, 2), true[b, f].swapaxes(0, 2), channel_axis=-1, data_range=2.0
            )
            for b in range(2)
            for f in range(3)
        ]
    )
    assert M.SSIM_DATA_RANGE_OPENSTL == 2.0
    np.testing.assert_allclose(evaluate(pred, true)["ssim"], openstl, rtol=RTOL)
    # the true range of [0, 1] data gives a lower SSIM: the two conventions must not be mixed
    assert evaluate(pred, true, data_range=M.SSIM_DATA_RANGE_UNIT)["ssim"] < openstl


# ---------------------------------------------------------------- clipping, streaming, per horizon


def test_mse_mae_unclipped_ssim_psnr_clipped():
    rng = np.random.default_rng(2)
    true = rng.random((2, 2, 1, 12, 12))
    pred = true.copy()
    pred[0, 0, 0, :3, :3] = 1.7
    pred[1, 1, 0, 5:, 5:] = -0.4
    out = evaluate(pred, true)
    clipped = evaluate(np.clip(pred, 0, 1), true)
    assert out["mse"] > clipped["mse"] and out["mae"] > clipped["mae"]
    assert out["ssim"] == clipped["ssim"] and out["psnr"] == clipped["psnr"]
    assert_matches(out, reference(pred, true))


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(4)
    pred, true = noisy_pair(rng, (7, 5, 2, 11, 12))
    one_shot = evaluate(pred, true, per_horizon=True)
    acc = MetricAccumulator()
    for a, b in [(0, 1), (1, 4), (4, 4), (4, 7)]:  # includes an empty batch
        acc.update(torch.from_numpy(pred[a:b]), torch.from_numpy(true[a:b]))
    streamed = acc.compute()
    assert acc.count == 7
    for name in ALL:
        np.testing.assert_allclose(streamed[name], one_shot[name], rtol=1e-12)
        np.testing.assert_allclose(streamed["per_horizon"][name], one_shot["per_horizon"][name], rtol=1e-12)
    acc.reset()
    with pytest.raises(StcsnnError, match="no samples"):
        acc.compute()


def test_evaluate_chunks_large_inputs(monkeypatch):
    rng = np.random.default_rng(8)
    pred, true = noisy_pair(rng, (5, 2, 1, 8, 8))
    whole = evaluate(pred, true, per_horizon=True)
    monkeypatch.setattr(M, "_CHUNK_ELEMENTS", 2 * 8 * 8 * 2)  # 2 samples per chunk
    chunked = evaluate(pred, true, per_horizon=True)
    for name in ALL:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-12)


def test_per_horizon_averages_to_overall():
    rng = np.random.default_rng(6)
    pred, true = noisy_pair(rng, (3, 6, 1, 9, 9))
    # the error grows with the horizon, as in real forecasts
    pred = pred + np.linspace(0, 0.3, 6)[None, :, None, None, None] * rng.standard_normal(pred.shape)
    result = evaluate(pred, true, per_horizon=True)
    assert set(result["per_horizon"]) == set(ALL)
    for name in ALL:
        values = result["per_horizon"][name]
        assert len(values) == 6 and all(isinstance(v, float) for v in values)
        assert np.mean(values) == pytest.approx(result[name], rel=1e-12)
    assert result["per_horizon"]["mse"][-1] > result["per_horizon"]["mse"][0]
    assert "per_horizon" not in evaluate(pred, true)


def test_tensor_and_array_inputs_agree():
    rng = np.random.default_rng(9)
    pred, true = noisy_pair(rng, (2, 2, 1, 8, 10), dtype=np.float32)
    from_numpy = evaluate(pred, true)
    tp = torch.from_numpy(pred).requires_grad_(True)
    from_torch = evaluate(tp, torch.from_numpy(true), metrics=["MSE", "ssim", "psnr", "mae"])
    assert list(from_torch) == ["mse", "ssim", "psnr", "mae"]
    for name in ALL:
        assert from_torch[name] == pytest.approx(from_numpy[name], rel=1e-12)
    read_only = true.copy()
    read_only.flags.writeable = False
    assert evaluate(pred, read_only, metrics="mse")["mse"] == pytest.approx(from_numpy["mse"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(10)
    pred, true = noisy_pair(rng, (3, 4, 2, 16, 16), dtype=np.float32)
    cpu = evaluate(pred, true, per_horizon=True)
    gpu = evaluate(torch.from_numpy(pred).cuda(), torch.from_numpy(true).cuda(), per_horizon=True)
    for name in ALL:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-10)


def test_core_module_imports_only_torch_and_numpy():
    tree = ast.parse(Path(M.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "importlib", "math", "collections", "typing", "numpy", "torch", "stcsnn"}


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("pred_shape", "true_shape", "match"),
    [
        ((2, 3, 1, 8, 8), (2, 3, 1, 8, 9), "same shape"),
        ((3, 1, 8, 8), (3, 1, 8, 8), "5-D"),
        ((1, 2, 3, 1, 8, 8), (1, 2, 3, 1, 8, 8), "5-D"),
        ((2, 0, 1, 8, 8), (2, 0, 1, 8, 8), "empty"),
    ],
)
def test_shape_errors(pred_shape, true_shape, match):
    with pytest.raises(StcsnnError, match=match):
        evaluate(np.zeros(pred_shape), np.zeros(true_shape))


def test_non_finite_values_name_the_input():
    true = np.full((1, 2, 1, 8, 8), 0.5)
    pred = true.copy()
    pred[0, 1, 0, 2, 2] = np.nan
    with pytest.raises(StcsnnError, match=r"^pred contains NaN or infinite values \(1 of 128"):
        evaluate(pred, true)
    bad_true = true.copy()
    bad_true[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(StcsnnError, match="^true contains NaN or infinite"):
        evaluate(true, bad_true)


def test_true_outside_unit_interval():
    pred = np.full((1, 1, 1, 8, 8), 0.5)
    with pytest.raises(StcsnnError, match=r"true must lie in \[0, 1\], found values in \[-1, 1\]"):
        evaluate(pred, np.linspace(-1, 1, 64).reshape(pred.shape))
    # float rounding just above 1 is tolerated
    evaluate(pred, np.full_like(pred, 1 + 1e-7))


def test_unknown_metric_lists_valid_ones():
    x = np.zeros((1, 1, 1, 8, 8))
    valid = "valid metrics are: mse, mae, rmse, ssim, psnr, snr, lpips"
    with pytest.raises(StcsnnError, match=f"unknown metric 'msssim'; {valid}"):
        evaluate(x, x, metrics=("mse", "msssim"))
    with pytest.raises(StcsnnError, match="no metric requested"):
        evaluate(x, x, metrics=())


def test_small_frames():
    x = np.zeros((1, 2, 1, 6, 32))
    with pytest.raises(StcsnnError, match="at least 7x7 pixels.*got 6x32"):
        evaluate(x, x)
    assert evaluate(x, x, metrics=("mse", "mae", "psnr"))["mse"] == 0.0


def test_other_errors():
    x = np.zeros((1, 1, 1, 8, 8))
    with pytest.raises(StcsnnError, match="floating point"):
        evaluate(x.astype(np.uint8), x)
    with pytest.raises(StcsnnError, match="numpy array or torch tensor"):
        evaluate(x.tolist(), x)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(StcsnnError, match="data_range"):
            MetricAccumulator(data_range=bad)
    acc = MetricAccumulator()
    acc.update(x, x)
    with pytest.raises(StcsnnError, match="same \\(T, C, H, W\\)"):
        acc.update(np.zeros((1, 2, 1, 8, 8)), np.zeros((1, 2, 1, 8, 8)))
    with pytest.raises(StcsnnError, match="no samples"):
        evaluate(np.zeros((0, 1, 1, 8, 8)), np.zeros((0, 1, 1, 8, 8)))


# ---------------------------------------------------------------- LPIPS (optional)


def test_lpips_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` fail
    x = np.zeros((1, 1, 1, 8, 8))
    expected = r"needs the optional 'lpips' package.*ModuleNotFoundError: import of lpips.*pip install lpips"
    with pytest.raises(StcsnnError, match=expected):
        evaluate(x, x, metrics=("lpips",))


def test_lpips_missing_weights(monkeypatch):
    fake = types.ModuleType("lpips")

    class LPIPS:  # noqa: D101 - stand-in for a failed torchvision download
        def __init__(self, **kwargs):
            raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake.LPIPS = LPIPS
    monkeypatch.setitem(sys.modules, "lpips", fake)
    x = np.zeros((1, 1, 1, 8, 8))
    with pytest.raises(StcsnnError, match=r"could not load its alex network weights.*name resolution.*hub"):
        evaluate(x, x, metrics=("lpips",))


def test_lpips_calling_convention(monkeypatch):
    """OpenSTL feeds LPIPS the clipped frames scaled to [-1, 1], 3 channels; one value per frame."""
    seen = {}

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net="alex", verbose=True):
            super().__init__()
            seen["net"] = net
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, a, b):
            seen["shape"], seen["range"] = tuple(a.shape), (float(a.min()), float(a.max()))
            return (self.w * (a - b).abs().mean(dim=(1, 2, 3), keepdim=True))

    fake = types.ModuleType("lpips")
    fake.LPIPS = FakeLPIPS
    monkeypatch.setitem(sys.modules, "lpips", fake)
    rng = np.random.default_rng(11)
    pred, true = noisy_pair(rng, (2, 3, 1, 8, 8), noise=0.5)
    result = evaluate(pred, true, metrics=("lpips", "mse"), per_horizon=True)
    assert seen["net"] == "alex" and seen["shape"] == (6, 3, 8, 8)
    assert seen["range"][0] >= -1 and seen["range"][1] <= 1
    expected = np.abs(2 * np.clip(pred, 0, 1) - 2 * true).mean(axis=(2, 3, 4))
    np.testing.assert_allclose(result["lpips"], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(result["per_horizon"]["lpips"], expected.mean(axis=0), rtol=1e-5)
    with pytest.raises(StcsnnError, match="1 or 3 channels, got C=2"):
        evaluate(np.zeros((1, 1, 2, 8, 8)), np.zeros((1, 1, 2, 8, 8)), metrics=("lpips",))


def openstl_rmse_snr(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """OpenSTL's RMSE and SNR written out in NumPy as ``openstl/core/metrics.py`` computes them (float64)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    rmse = np.sqrt(np.mean((pred - true) ** 2, axis=(0, 1)).sum())  # on the unclipped prediction
    pc = np.minimum(np.maximum(pred, 0.0), 1.0)  # SNR after clipping, frame by frame
    snr = np.mean([10.0 * np.log10((t ** 2).mean() / ((t - p) ** 2).mean())
                   for p_seq, t_seq in zip(pc, true) for p, t in zip(p_seq, t_seq)])
    return float(rmse), float(snr)


def test_rmse_and_snr_match_openstl():
    rng = np.random.default_rng(7)
    pred, true = noisy_pair(rng, (3, 4, 2, 16, 16), noise=0.2)
    rmse, snr = openstl_rmse_snr(pred, true)
    result = evaluate(pred, true, metrics=("rmse", "snr", "mse"), per_horizon=True)
    np.testing.assert_allclose(result["rmse"], rmse, rtol=RTOL)
    np.testing.assert_allclose(result["snr"], snr, rtol=RTOL)
    assert result["rmse"] == pytest.approx(np.sqrt(result["mse"]), rel=1e-12)  # the root of the overall MSE
    per_t_mse = ((pred - true) ** 2).sum(axis=(2, 3, 4)).mean(axis=0)
    np.testing.assert_allclose(result["per_horizon"]["rmse"], np.sqrt(per_t_mse), rtol=RTOL)
    # RMSE alone (without MSE requested) gives the same value, and MSE is not reported then
    alone = evaluate(pred, true, metrics="rmse")
    assert set(alone) == {"rmse"} and alone["rmse"] == pytest.approx(result["rmse"], rel=1e-12)


def test_snr_is_finite_for_perfect_and_black_frames():
    true = np.zeros((1, 2, 1, 8, 8))
    true[0, 0] = 0.5
    result = evaluate(true.copy(), true, metrics="snr", per_horizon=True)
    # frame 0 predicted exactly: capped at +100 dB; frame 1 all black and exact: 0 dB (1e-10 / 1e-10)
    assert result["per_horizon"]["snr"] == pytest.approx([100.0 + 10 * np.log10(0.25), 0.0])
    assert np.isfinite(result["snr"])
