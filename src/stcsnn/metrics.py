r"""Evaluation metrics of stcsnn, defined exactly as OpenSTL defines them.

OpenSTL (https://github.com/chengtan9907/OpenSTL, ``openstl/core/metrics.py``, function ``metric``) is the
reference toolbox for spatio-temporal predictive learning; its tables are what stcsnn's numbers are compared
against, so every metric below reproduces its definition. Inputs are predictions ``pred`` and ground truth
``true`` shaped ``(N, T, C, H, W)`` (samples, predicted frames, channels, height, width) with ``true`` in
[0, 1]. Write :math:`\hat x = \mathrm{clip}(\text{pred}, 0, 1)` and :math:`P = C H W` (pixels per frame).

Definitions (n indexes samples, t predicted frames; averages are over all N*T frames)
-------------------------------------------------------------------------------------
``mse``  -- per-frame **sum** of squared errors, on the UNCLIPPED prediction::

    MSE = 1/(N T) * sum_{n,t} sum_{c,h,w} (pred[n,t,c,h,w] - true[n,t,c,h,w])^2

  (OpenSTL: ``np.mean((pred-true)**2, axis=(0, 1)).sum()``.) The unit is "squared error per frame", not per
  pixel: Moving MNIST frames have P = 64*64 = 4096 pixels, so a published MSE of 29.8 means a mean squared
  error of 29.8 / 4096 = 0.0073 per pixel. TaxiBJ (2x32x32, P = 2048) and KTH (1x128x128, P = 16384) scale
  the same way, so MSE values are only comparable between datasets of the same frame size.

``mae``  -- per-frame **sum** of absolute errors, on the UNCLIPPED prediction::

    MAE = 1/(N T) * sum_{n,t} sum_{c,h,w} |pred[n,t,c,h,w] - true[n,t,c,h,w]|

``rmse`` -- the square root of MSE (OpenSTL: ``np.sqrt(np.mean((pred-true)**2, axis=(0, 1)).sum())``), so
  also a per-frame-sum quantity on the UNCLIPPED prediction: ``RMSE = sqrt(MSE)``. Per horizon it is the root
  of that frame's MSE; unlike the other metrics, the overall RMSE is therefore not the mean of its per-horizon
  values (it is the root of their MSEs' mean, as in OpenSTL).

``snr``  -- signal-to-noise ratio in dB per frame, on the CLIPPED prediction (OpenSTL computes it after
  clipping), averaged over frames::

    SNR = 1/(N T) * sum_{n,t} 10 log10(mean_{c,h,w} true^2 / mean_{c,h,w} (x_hat - true)^2)

  Each per-frame value is kept within [-100, 100] dB (both means are floored at 1e-10): OpenSTL returns
  ``inf`` for a perfect frame and ``-inf``/``nan`` for an all-black true frame.

``psnr`` -- peak signal-to-noise ratio in dB per frame, on the CLIPPED prediction, peak value 1, averaged
  over frames (an average of per-frame logarithms, not the PSNR of the average error)::

    mse_frame[n,t] = 1/P * sum_{c,h,w} (x_hat[n,t,c,h,w] - true[n,t,c,h,w])^2      (a per-pixel MEAN)
    PSNR = 1/(N T) * sum_{n,t} min(20 log10(1 / sqrt(mse_frame[n,t])), 100)

  OpenSTL's ``PSNR`` returns ``float('inf')`` when a frame is predicted exactly (``mse == 0``), which turns
  the whole average into ``inf``. stcsnn caps each frame at :data:`PSNR_CAP_DB` = 100 dB (a per-pixel mean
  squared error of 1e-10) so the average stays finite; results differ from OpenSTL's only when some frame
  has ``mse_frame < 1e-10``, where OpenSTL reports a larger value or ``inf``.

``ssim`` -- structural similarity per frame, on the CLIPPED prediction, exactly scikit-image's
  ``structural_similarity`` with its defaults as OpenSTL calls it (7x7 uniform window, K1 = 0.01,
  K2 = 0.03, sample covariance) with the channels as the channel axis (the mean over channels), then the
  mean over frames. For one channel of one frame, with x = x_hat and y = true (both H x W)::

    mu_x, mu_y, m_xx, m_yy, m_xy = 7x7 box means of x, y, x*x, y*y, x*y over every window that lies
                                   wholly inside the frame ((H-6) x (W-6) windows)
    s_x^2 = 49/48 (m_xx - mu_x^2),  s_y^2 = 49/48 (m_yy - mu_y^2),  s_xy = 49/48 (m_xy - mu_x mu_y)
    C1 = (0.01 R)^2,  C2 = (0.03 R)^2,  R = data_range (default 2.0, see below)
    S  = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
    SSIM(frame) = mean over channels of the mean of S over the (H-6) x (W-6) windows
    SSIM = 1/(N T) * sum_{n,t} SSIM(frame[n,t])

  scikit-image filters the whole image with ``scipy.ndimage.uniform_filter`` (reflect padding) and then
  crops ``(7-1)//2 = 3`` pixels from every border before averaging; the remaining positions are exactly the
  windows that never touch the padding, so the "valid" 7x7 box filter used here (``avg_pool2d``) gives the
  same numbers (tested against scikit-image). OpenSTL passes frames as ``frame.swapaxes(0, 2)``, i.e.
  (W, H, C): a transposed image, which leaves this symmetric window's SSIM unchanged. Frames smaller than
  7x7 have no full window and are refused.

``lpips`` (optional, needs the ``lpips`` package and its AlexNet weights) -- OpenSTL's ``LPIPS`` class:
  ``lpips.LPIPS(net='alex')`` on the clipped prediction and the truth scaled to [-1, 1] (``2 x - 1``), one
  value per frame, averaged. Single-channel frames are repeated to 3 channels (what the network's input
  normalisation broadcasts them to in OpenSTL); other channel counts than 1 and 3 are refused.

Per-horizon values: the same formulas with the average taken over samples only, one value per predicted
frame index t = 0..T-1 (``compute()["per_horizon"][metric]``). For every metric the overall value is the
mean of its T per-horizon values.

The SSIM data range: why 2.0 is the default
-------------------------------------------
OpenSTL calls ``cal_ssim(pred[b, f].swapaxes(0, 2), true[b, f].swapaxes(0, 2), multichannel=True)`` with no
``data_range`` on float32 arrays in [0, 1] (``openstl/core/metrics.py``; the arrays come from
``tensor.cpu().numpy()`` in ``openstl/methods``), and pins ``scikit-image<=0.19.3``
(``requirements/runtime.txt``). Up to 0.19.x, ``structural_similarity`` filled a missing ``data_range`` from
``skimage.util.dtype.dtype_range[im1.dtype.type]``, which is ``(-1, 1)`` for every float type, so
``data_range = 1 - (-1) = 2.0``. scikit-image documented this pitfall in PR #6595
(https://github.com/scikit-image/scikit-image/pull/6595: "for floating-point image data, this estimate yields
a result double the value of the desired range ... an estimate of 2, instead of 1") and from 0.20.0 raises
``ValueError: Since image dtype is floating point, you must specify the data_range parameter`` instead
(PR #6612, https://github.com/scikit-image/scikit-image/pull/6612; the 0.20 port in cuCIM PR #455 and many
downstream breakages such as vaquerizaslab/chess PR #60 date it to v0.20.0). OpenSTL's call therefore only
runs on scikit-image <= 0.19, where it means R = 2.0: OpenSTL's published SSIM values (and papers that use
its evaluation code, such as the STC paper) use R = 2.0. stcsnn's default is
:data:`SSIM_DATA_RANGE_OPENSTL` = 2.0 so its numbers are comparable with those tables. The physically
correct range for data in [0, 1] is :data:`SSIM_DATA_RANGE_UNIT` = 1.0 (``data_range=1.0``); it gives LOWER
SSIM values (C1 and C2 are 4x smaller), so never mix the two in one table.

The metric table
----------------
:data:`METRICS` holds one :class:`Metric` per name: its label, print format, direction (lower or higher is
better), whether it is computed on the clipped prediction, and its per-frame function (or, for RMSE, the metric
it derives from). :data:`REPORTED` is the default set. Reports, progress lines, ``reproduce``'s tables and its
statistics all read the table, so a metric added with :func:`register_metric` appears in all of them.

Implementation: everything is computed in torch on the inputs' device, batch by batch
(:class:`MetricAccumulator`), with per-frame values in float64 (float32 on Apple MPS, which has no float64)
and float64 running sums, so an evaluation loop never holds all predictions. OpenSTL computes in float32;
the two agree to about six significant digits.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stcsnn.errors import StcsnnError, StcsnnTypeError

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "REPORTED",
    "Metric",
    "register_metric",
    "reported_metrics",
    "metric_line",
    "unregister_metric",
    "VALID_METRICS",
    "SSIM_DATA_RANGE_OPENSTL",
    "SSIM_DATA_RANGE_UNIT",
    "PSNR_CAP_DB",
    "SSIM_WINDOW",
    "MetricAccumulator",
    "evaluate",
]

#: SSIM data range that reproduces OpenSTL's published numbers (scikit-image <= 0.19 default for floats).
SSIM_DATA_RANGE_OPENSTL: float = 2.0
#: SSIM data range equal to the actual range of [0, 1] data.
SSIM_DATA_RANGE_UNIT: float = 1.0
#: Largest per-frame PSNR in dB (OpenSTL returns inf for a perfect frame), reached at a mean squared
#: error of 1e-10 per pixel.
PSNR_CAP_DB: float = 100.0
#: Side of scikit-image's default uniform SSIM window.
SSIM_WINDOW: int = 7

_K1, _K2 = 0.01, 0.03
_PSNR_MIN_MSE = 10.0 ** (-PSNR_CAP_DB / 10.0)
# Tolerance for ``true`` slightly outside [0, 1] through float rounding (e.g. (x + 1) / 2 in float32).
_RANGE_TOL = 1e-6
# Elements per chunk when evaluate() is handed a whole array at once.
_CHUNK_ELEMENTS = 1 << 22


class Metric(NamedTuple):
    """One row of the metric table: everything a report, a progress line or a statistics table needs to know.

    ``per_frame(pred, true, acc)`` returns the (B, T) per-frame values of (B, T, C, H, W) float64 tensors
    (``pred`` already clipped to [0, 1] when ``clipped``); ``acc`` is the :class:`MetricAccumulator` (for its
    ``data_range`` and its cached networks). A metric with ``source`` instead is derived from another metric's
    running sums: its value is ``transform(mean of the source)``, per horizon and overall (RMSE = sqrt(MSE)).
    """

    name: str
    label: str  # as printed in tables: "MSE"
    fmt: str  # how reports print it: ".4f"
    lower_is_better: bool
    clipped: bool  # computed on the clipped prediction (OpenSTL clips for these)
    per_frame: Callable[[Tensor, Tensor, Any], Tensor] | None = None
    source: str | None = None
    transform: Callable[[float], float] | None = None
    description: str = ""

    def format(self, value: float) -> str:
        return format(value, self.fmt)


#: The metric table, in the order reports list metrics (see the module docstring for each definition).
#: :func:`register_metric` adds one; everything that reports metrics reads it.
METRICS: dict[str, Metric] = {}
#: The metrics reported when none are named (the config key ``metrics`` names others).
REPORTED: tuple[str, ...] = ("mse", "mae", "ssim", "psnr")


def register_metric(metric: Metric, reported: bool = False) -> Metric:
    """Add ``metric`` to the table (and to :data:`REPORTED` with ``reported=True``); the name must be new."""
    global REPORTED
    if metric.name in METRICS:
        raise StcsnnError(f"metric {metric.name!r} is already registered")
    if (metric.per_frame is None) == (metric.source is None):
        raise StcsnnError(f"metric {metric.name!r} needs exactly one of per_frame and source")
    METRICS[metric.name] = metric
    if reported:
        REPORTED = (*REPORTED, metric.name)
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric added by :func:`register_metric` (tests and plugins that add one temporarily)."""
    global REPORTED
    METRICS.pop(name, None)
    REPORTED = tuple(m for m in REPORTED if m != name)


def reported_metrics() -> tuple[str, ...]:
    """The default metric set now (a function, since :func:`register_metric` may extend it after import)."""
    return REPORTED


def metric_line(results: dict[str, Any], names: Iterable[str] | None = None) -> str:
    """``MSE 29.8000  MAE 90.1000  SSIM 0.9100  PSNR 21.500``: each named metric (default: the reported set) by its
    label and format, in the order given; a name without a value in ``results`` is left out."""
    names = reported_metrics() if names is None else names
    return "  ".join(f"{METRICS[n].label} {METRICS[n].format(results[n])}" for n in names if n in results)


def _check_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise StcsnnTypeError(f"metric names must be strings, got {name!r}")
        key = name.strip().lower()
        if key not in METRICS:
            raise StcsnnError(f"unknown metric {name!r}; valid metrics are: {', '.join(METRICS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise StcsnnError(f"no metric requested; choose among: {', '.join(METRICS)}")
    return tuple(out)


def _check_data_range(data_range: float) -> float:
    try:
        value = float(data_range)
    except (TypeError, ValueError):
        raise StcsnnTypeError(f"data_range must be a positive number, got {data_range!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise StcsnnError(
            f"data_range must be a positive finite number (2.0 = OpenSTL's convention, 1.0 = the actual "
            f"range of [0, 1] data), got {data_range!r}"
        )
    return value


def _to_tensor(x: Any, name: str, device: torch.device | None) -> Tensor:
    """A floating tensor from a numpy array or tensor, detached, on ``device`` when given."""
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        arr = x if x.flags.writeable else x.copy()
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
                or arr.dtype == np.bool_):
            raise StcsnnTypeError(f"{name} must be a floating-point array with values in [0, 1], got dtype "
                                  f"{arr.dtype}")
        t = torch.from_numpy(arr)
    else:
        raise StcsnnTypeError(f"{name} must be a numpy array or torch tensor shaped (N, T, C, H, W), "
                              f"got {type(x).__name__}")
    if not t.is_floating_point():
        raise StcsnnTypeError(
            f"{name} must be floating point with values in [0, 1], got dtype {t.dtype}; "
            f"convert 8-bit frames with x / 255"
        )
    if device is not None:
        t = t.to(device)
    return t


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _ssim_per_frame(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """Mean SSIM per frame (mean over channels) of (B, T, C, H, W) tensors -> (B, T)."""
    b, t, c, h, w = x.shape
    x = x.reshape(b * t * c, 1, h, w)
    y = y.reshape(b * t * c, 1, h, w)
    # One pooled pass over the five maps: box means over the windows wholly inside the frame, which are
    # exactly the positions scikit-image keeps after reflect-padded filtering and cropping 3 pixels.
    means = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), SSIM_WINDOW, stride=1)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)
    n_win = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n_win / (n_win - 1)  # sample covariance, scikit-image's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).reshape(b, t, c).mean(dim=-1)


class _Lpips:
    """OpenSTL's LPIPS (AlexNet) on a device; built lazily so the package stays optional."""

    def __init__(self, device: torch.device, net: str = "alex") -> None:
        hint = ("install it with `pip install lpips` (it also needs torchvision) and make its AlexNet "
                "weights available offline: run it once with network access, or copy "
                "alexnet-owt-7be5be79.pth into $TORCH_HOME/hub/checkpoints (default "
                "~/.cache/torch/hub/checkpoints)")
        try:
            lpips = importlib.import_module("lpips")
        except Exception as exc:  # ImportError, or a broken install of lpips or torchvision
            raise StcsnnError(f"metric 'lpips' needs the optional 'lpips' package, which could not be "
                              f"imported ({type(exc).__name__}: {exc}); {hint}") from exc
        try:
            try:
                model = lpips.LPIPS(net=net, verbose=False)
            except TypeError:  # old lpips without the verbose argument
                model = lpips.LPIPS(net=net)
        except Exception as exc:  # typically a failed weight download when offline
            raise StcsnnError(f"metric 'lpips' could not load its {net} network weights "
                              f"({type(exc).__name__}: {exc}); {hint}") from exc
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-frame LPIPS of clipped (B, T, C, H, W) frames in [0, 1] -> (B, T)."""
        b, t, c, h, w = x.shape
        if c not in (1, 3):
            raise StcsnnError(f"metric 'lpips' needs frames with 1 or 3 channels, got C={c}; "
                              f"drop 'lpips' from the metrics for this dataset")
        x = x.reshape(b * t, c, h, w).float() * 2 - 1
        y = y.reshape(b * t, c, h, w).float() * 2 - 1
        if c == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return self.model(x, y).reshape(b, t)


def _mse(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    return (p - y).square().sum(dim=(2, 3, 4))  # unclipped, summed over the frame, as OpenSTL


def _mae(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    return (p - y).abs().sum(dim=(2, 3, 4))


def _ssim(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    return _ssim_per_frame(p, y, acc.data_range)


def _psnr(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    return -10.0 * torch.log10((p - y).square().mean(dim=(2, 3, 4)).clamp_min(_PSNR_MIN_MSE))


def _snr(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    signal = y.square().mean(dim=(2, 3, 4)).clamp_min(_PSNR_MIN_MSE)
    noise = (p - y).square().mean(dim=(2, 3, 4)).clamp_min(_PSNR_MIN_MSE)
    return 10.0 * torch.log10(signal / noise)


def _lpips(p: Tensor, y: Tensor, acc: Any) -> Tensor:
    return acc.lpips_model(p.device)(p, y)


for _row in (
    Metric("mse", "MSE", ".4f", True, False, _mse, description="per-frame sum of squared errors"),
    Metric("mae", "MAE", ".4f", True, False, _mae, description="per-frame sum of absolute errors"),
    Metric("rmse", "RMSE", ".4f", True, False, source="mse", transform=math.sqrt, description="sqrt(MSE)"),
    Metric("ssim", "SSIM", ".4f", False, True, _ssim, description="structural similarity (7x7, R=2 default)"),
    Metric("psnr", "PSNR", ".3f", False, True, _psnr, description="peak signal-to-noise ratio, dB"),
    Metric("snr", "SNR", ".3f", False, True, _snr, description="signal-to-noise ratio, dB"),
    Metric("lpips", "LPIPS", ".4f", True, True, _lpips, description="learned perceptual distance (AlexNet)"),
):
    register_metric(_row)
del _row

#: Every metric name :func:`evaluate` and :class:`MetricAccumulator` accept when this module is imported
#: (:data:`METRICS` itself is the live table).
VALID_METRICS: tuple[str, ...] = tuple(METRICS)
#: The reported set as of import (kept for old imports; :func:`reported_metrics` is the live one).
DEFAULT_METRICS: tuple[str, ...] = REPORTED


class MetricAccumulator:
    """Streaming OpenSTL metrics: ``update(pred, true)`` per batch, then ``compute()``.

    Batches are (B, T, C, H, W) numpy arrays or tensors; all batches share T, C, H, W. Work happens on the
    predictions' device (or ``device`` when given) and only T running sums per metric are kept.
    See the module docstring for the definitions and for ``data_range`` (SSIM only; 2.0 = OpenSTL).
    """

    def __init__(
        self,
        metrics: str | Iterable[str] | None = None,
        data_range: float = SSIM_DATA_RANGE_OPENSTL,
        device: torch.device | str | None = None,
    ) -> None:
        self.metrics = _check_metrics(reported_metrics() if metrics is None else metrics)
        self.data_range = _check_data_range(data_range)
        self.device = torch.device(device) if device is not None else None
        self._lpips: _Lpips | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._frame_shape: tuple[int, int, int, int] | None = None

    @property
    def count(self) -> int:
        """Number of samples (sequences) accumulated."""
        return self._count

    def _validate(self, pred: Tensor, true: Tensor) -> None:
        if pred.ndim != 5 or true.ndim != 5:
            raise StcsnnError(
                f"pred and true must be 5-D (N, T, C, H, W) (add a leading axis for a single sequence), "
                f"got pred {tuple(pred.shape)} and true {tuple(true.shape)}"
            )
        if pred.shape != true.shape:
            raise StcsnnError(f"pred and true must have the same shape (N, T, C, H, W), got pred "
                              f"{tuple(pred.shape)} and true {tuple(true.shape)}")
        _, t, c, h, w = pred.shape
        if t == 0 or c == 0 or h == 0 or w == 0:
            raise StcsnnError(f"pred and true have an empty frame axis: shape {tuple(pred.shape)}")
        if self._frame_shape is not None and self._frame_shape != (t, c, h, w):
            raise StcsnnError(f"every batch must have the same (T, C, H, W) = {self._frame_shape}, "
                              f"got {(t, c, h, w)}")
        if "ssim" in self.metrics and (h < SSIM_WINDOW or w < SSIM_WINDOW):
            raise StcsnnError(f"metric 'ssim' needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels "
                              f"(its window), got {h}x{w}; drop 'ssim' from the metrics for smaller frames")
        for name, x in (("pred", pred), ("true", true)):
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise StcsnnError(f"{name} contains NaN or infinite values ({bad} of {x.numel()} elements); "
                                  f"metrics need finite inputs")
        if true.numel():
            lo, hi = float(true.min()), float(true.max())
            if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
                raise StcsnnError(f"true must lie in [0, 1], found values in [{lo:.6g}, {hi:.6g}]; rescale "
                                  f"the targets (e.g. uint8 / 255, or (x + 1) / 2 for data in [-1, 1])")

    @torch.no_grad()
    def update(self, pred: Any, true: Any) -> None:
        """Add a batch of predictions and targets, each (B, T, C, H, W)."""
        device = self.device
        pred_t = _to_tensor(pred, "pred", device)
        true_t = _to_tensor(true, "true", pred_t.device)
        self._validate(pred_t, true_t)
        b, t, c, h, w = pred_t.shape
        if self._frame_shape is None:
            self._frame_shape = (t, c, h, w)
        if b == 0:
            return
        dev = pred_t.device
        dtype = _compute_dtype(dev)
        p = pred_t.to(dtype)
        y = true_t.to(dtype)
        per_frame: dict[str, Tensor] = {}  # metric -> (B, T)
        clipped = p.clamp(0.0, 1.0) if any(METRICS[m].clipped for m in self._summed()) else None
        for name in self._summed():
            metric = METRICS[name]
            per_frame[name] = metric.per_frame(clipped if metric.clipped else p, y, self)
        acc_device = torch.device("cpu") if dtype != torch.float64 else dev
        for name in self._summed():
            batch_sum = per_frame[name].to(device=acc_device, dtype=torch.float64).sum(dim=0)
            if name in self._sums:
                self._sums[name] += batch_sum.to(self._sums[name].device)
            else:
                self._sums[name] = batch_sum
        self._count += b

    def _summed(self) -> list[str]:
        """The metrics kept as running sums (a derived metric, RMSE, keeps its source's)."""
        names = [m for m in self.metrics if METRICS[m].source is None]
        for m in self.metrics:
            source = METRICS[m].source
            if source is not None and source not in names:
                names.append(source)
        return names

    def lpips_model(self, device: torch.device) -> _Lpips:
        """The LPIPS network, built on first use (it needs an optional package and downloaded weights)."""
        if self._lpips is None:
            self._lpips = _Lpips(device)
        return self._lpips

    def compute(self) -> dict[str, Any]:
        """Overall values ``{metric: float}`` plus ``"per_horizon": {metric: [float] * T}``."""
        if self._count == 0:
            raise StcsnnError("no samples were accumulated: call update(pred, true) with at least one "
                              "sequence before compute()")
        result: dict[str, Any] = {}
        per_horizon: dict[str, list[float]] = {}
        for name in self.metrics:
            metric = METRICS[name]
            if metric.source is not None:  # RMSE: the root of the MSE (overall: of the mean MSE), as OpenSTL
                values = (self._sums[metric.source] / self._count).cpu()
                per_horizon[name] = [metric.transform(float(v)) for v in values]
                result[name] = metric.transform(float(values.mean()))
                continue
            values = (self._sums[name] / self._count).cpu()
            per_horizon[name] = [float(v) for v in values]
            result[name] = float(values.mean())
        result["per_horizon"] = per_horizon
        return result


def evaluate(
    pred: Any,
    true: Any,
    metrics: str | Sequence[str] | None = None,
    data_range: float = SSIM_DATA_RANGE_OPENSTL,
    per_horizon: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """OpenSTL metrics of ``pred`` against ``true``, both (N, T, C, H, W) arrays or tensors in [0, 1].

    Returns ``{metric: float}``; with ``per_horizon=True`` also ``"per_horizon": {metric: [float] * T}``.
    ``data_range`` is SSIM's R (2.0 reproduces OpenSTL's tables, 1.0 is the true range of [0, 1] data).
    Large inputs are processed in chunks through :class:`MetricAccumulator`.
    """
    acc = MetricAccumulator(metrics, data_range=data_range, device=device)
    shape = tuple(getattr(pred, "shape", ()))
    if len(shape) != 5 or shape != tuple(getattr(true, "shape", ())):
        acc.update(pred, true)  # its validation reports the problem
    else:
        step = max(1, _CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
        for start in range(0, max(shape[0], 1), step):
            acc.update(pred[start:start + step], true[start:start + step])
    result = acc.compute()
    if not per_horizon:
        result.pop("per_horizon")
    return result
