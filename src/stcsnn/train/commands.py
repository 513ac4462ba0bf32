"""``stcsnn train | eval | predict | visualize``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from stcsnn.device import pick_device
from stcsnn.errors import DataError, StcsnnError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a predictor from a YAML config")
    p.add_argument("--config", help="YAML config (configs/<dataset>/<neuron>.yaml); optional with --resume PATH")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nesting; value parsed as YAML); repeatable")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", metavar="auto|PATH", help="auto: continue --out's last.pt if present; or a checkpoint")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the config)")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision")
    p.add_argument("--compile", action="store_true", help="torch.compile the neuron updates")
    p.add_argument("--checkpoint-steps", type=int, help="activation checkpointing over K time steps")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint (report.json, report.md, predictions.png)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override data keys, e.g. data_root=/data or max_test_batches=10")
    p.add_argument("--out", help="folder for the report (default: the checkpoint's folder)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="predict future frames for new videos (no ground truth needed)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True, help=".npy of (N, T_in, C, H, W) or (T_in, C, H, W), uint8 or [0,1]")
    p.add_argument("--output", required=True, help=".npy to write, (N, N_out, C, H, W) float32")
    p.add_argument("--frames", type=int, help="frames to predict (default: the trained horizon)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_predict)

    p = sub.add_parser("visualize", help="PNG grid and animated GIF of predictions")
    p.add_argument("source", help="a run directory or checkpoint (uses its test split), or a predict .npy")
    p.add_argument("--input", help="with a predict .npy: the input frames .npy it was made from")
    p.add_argument("--truth", help="with a predict .npy: optional true future frames .npy")
    p.add_argument("--samples", default="0,1,2,3", help="comma-separated sample indices")
    p.add_argument("--out", help="output folder (default: next to the source)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_visualize)


def _train(args: argparse.Namespace) -> int:
    from stcsnn.config import load_config, parse_overrides
    from stcsnn.models.loading import read_checkpoint
    from stcsnn.train.loop import train

    overrides = parse_overrides(args.set)
    for key, flag in (("device", args.device), ("amp", args.amp), ("checkpoint_steps", args.checkpoint_steps)):
        if flag is not None:
            overrides[key] = flag
    if args.compile:
        overrides["compile"] = True
    if args.config is None:
        # no config: continue a run from its checkpoint (--resume PATH, or --resume auto with --out DIR)
        if args.resume == "auto" and args.out and (Path(args.out) / "last.pt").exists():
            source = Path(args.out) / "last.pt"
        elif args.resume not in (None, "auto"):
            source = Path(args.resume)
        else:
            raise StcsnnError("stcsnn train needs --config FILE, or --resume PATH to a checkpoint, or "
                              "--out DIR --resume auto for a run directory that holds last.pt")
        from stcsnn.config import make_config

        cfg = make_config(read_checkpoint(source)["config"], overrides)
        out = args.out or str(source.parent)
    else:
        cfg = load_config(args.config, overrides)
        out = args.out or str(Path("runs") / Path(args.config).stem)
    from stcsnn.io import check_writable

    check_writable(Path(out) / "config.yaml")
    return train(cfg, out, args.resume, progress=not args.quiet)



def _eval(args: argparse.Namespace) -> int:
    from stcsnn.config import make_config, parse_overrides
    from stcsnn.io import check_writable
    from stcsnn.models.loading import load_model
    from stcsnn.train.evaluate import evaluate, write_report
    from stcsnn.train.loop import build_splits

    device = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    cfg = make_config(cfg.to_dict(), parse_overrides(args.set))
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    check_writable(out / "report.json")
    dataset = build_splits(cfg)[args.split]
    results, samples = evaluate(model, dataset, cfg, device, cfg.max_test_batches, keep=cfg.num_visualize)
    meta = {"split": args.split, "checkpoint": str(args.checkpoint), "dataset": cfg.dataset, "neuron": cfg.neuron,
            "num_samples": len(dataset)}
    stem = "report" if args.split == "test" else f"report_{args.split}"
    paths = write_report(out, results, meta, samples, stem=stem)
    print(f"{args.split}: MSE {results['mse']:.4f}  MAE {results['mae']:.4f}  SSIM {results['ssim']:.4f}  "
          f"PSNR {results['psnr']:.3f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def load_frames(path: str, channels: int | None = None, what: str = "input") -> np.ndarray:
    """Read a .npy of frames (N, T, C, H, W) or (T, C, H, W) as float32 in [0, 1], with clear errors."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} file {path!r} not found (expected a .npy of frames (N, T, C, H, W))")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{what} file {path!r} is not a readable .npy array: {str(exc).splitlines()[0]}") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        raise DataError(f"{what} file {path!r} is an .npz archive; expected a single .npy array")
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise DataError(f"{what} file {path!r} has shape {arr.shape}; expected (N, T, C, H, W) or (T, C, H, W)")
    if channels is not None and arr.shape[2] != channels:
        raise DataError(f"{what} file {path!r} has {arr.shape[2]} channels (shape {arr.shape}); the model expects "
                        f"{channels}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{what} file {path!r} has dtype {arr.dtype}; expected uint8 or float in [0, 1]")
    if not np.isfinite(arr).all():
        raise DataError(f"{what} file {path!r} contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{what} file {path!r} has values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] (or uint8)")
    return arr.astype(np.float32)


def _predict(args: argparse.Namespace) -> int:
    from stcsnn.io import atomic_write_bytes, check_writable
    from stcsnn.models.loading import load_model

    device = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    frames = load_frames(args.input, model.frame_channels)
    if cfg.frame_shape and list(frames.shape[3:]) != list(cfg.frame_shape[1:]):
        print(f"note: frames are {frames.shape[3]}x{frames.shape[4]}, the model was trained on "
              f"{cfg.frame_shape[1]}x{cfg.frame_shape[2]}", file=sys.stderr)
    n_out = args.frames if args.frames is not None else cfg.output_frames
    if n_out < 1:
        raise StcsnnError(f"--frames must be >= 1, got {n_out}")
    if args.batch_size < 1:
        raise StcsnnError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.output.endswith(".npy"):
        raise StcsnnError(f"--output must be a .npy path, got {args.output!r}")
    if Path(args.output).is_dir():
        raise StcsnnError(f"--output {args.output!r} is a directory; expected a .npy file path")
    check_writable(args.output)
    preds = []
    with torch.no_grad():
        for i in range(0, len(frames), args.batch_size):
            x = torch.from_numpy(frames[i:i + args.batch_size]).to(device)
            preds.append(model(x, n_future=n_out).float().cpu().numpy())
    out = np.concatenate(preds).astype(np.float32)
    import io

    buf = io.BytesIO()
    np.save(buf, out)
    try:
        atomic_write_bytes(args.output, buf.getvalue())
    except OSError as exc:  # the previous file, if any, is left as it was
        raise StcsnnError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}: {out.shape} float32 ({frames.shape[1]} input frames -> {n_out} predicted)")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from stcsnn.viz import prediction_grid, write_gif, write_png

    try:
        idx = [int(s) for s in args.samples.split(",") if s.strip()]
    except ValueError:
        raise StcsnnError(f"--samples expects comma-separated integers, got {args.samples!r}") from None
    src = Path(args.source)
    if src.suffix == ".npy":
        pred = load_frames(str(src), what="prediction")
        if not args.input:
            raise StcsnnError("visualizing a predict output needs --input FRAMES.npy (the frames it was made from)")
        inputs = load_frames(args.input)
        truth = load_frames(args.truth) if args.truth else pred
        out = Path(args.out) if args.out else src.parent
        stem = src.stem
    else:
        from stcsnn.models.loading import load_model
        from stcsnn.train.evaluate import evaluate
        from stcsnn.train.loop import build_splits

        ckpt = src / "best.pt" if src.is_dir() else src
        if src.is_dir() and not ckpt.exists():
            ckpt = src / "last.pt"
        device = pick_device(args.device)
        model, cfg = load_model(ckpt, device)
        test = build_splits(cfg)["test"]
        keep = max(idx) + 1
        _, samples = evaluate(model, torch.utils.data.Subset(test, range(min(keep, len(test)))), cfg, device, keep=keep)
        inputs, truth, pred = samples["inputs"], samples["truth"], samples["pred"]
        out = Path(args.out) if args.out else ckpt.parent
        stem = "visualize"
    bad = [i for i in idx if i >= len(pred) or i >= len(inputs)]
    if bad:
        raise StcsnnError(f"sample index {bad[0]} out of range: there are {min(len(pred), len(inputs))} samples")
    png = out / f"{stem}_grid.png"
    write_png(png, prediction_grid(inputs[idx], truth[idx], pred[idx]))
    written = [png]
    for i in idx:
        gif = out / f"{stem}_sample{i}.gif"
        write_gif(gif, inputs[i], truth[i], pred[i])
        written.append(gif)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
