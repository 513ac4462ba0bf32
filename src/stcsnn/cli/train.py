"""``stcsnn train | eval | predict | visualize``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stcsnn.errors import DataError, StcsnnError

if TYPE_CHECKING:
    import torch


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a predictor from a YAML config")
    p.add_argument("--config", help="YAML config (configs/<dataset>/reference.yaml, configs/quickstart.yaml, "
                   "...); optional with --resume PATH")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nesting; value parsed as YAML); repeatable")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="auto: continue --out's own run from its last.pt (a new run if --out is empty or new); "
                        "PATH: continue that checkpoint, into an empty or new --out or the folder PATH is in")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the config)")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision")
    p.add_argument("--compile", action="store_true", help="torch.compile the neuron updates")
    p.add_argument("--checkpoint-steps", type=int, help="activation checkpointing over K time steps")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files under OUT/tensorboard/ (needs: pip install \"stcsnn[tb]\")")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint (report.json, report.md, predictions.png)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="the split to evaluate (only that split's files are needed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override data and evaluation keys, e.g. data_root=/data or max_test_batches=10; keys "
                        "that define the model (neuron, hidden_channels, ...) are the checkpoint's")
    p.add_argument("--out", help="folder for the report (default: the checkpoint's folder)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: --set device=..., else auto)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="predict future frames for new videos (no ground truth needed)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True,
                   help=".npy of (N, T_in, C, H, W), (N, T_in, H, W) (one channel, as the npy dataset reads it) or "
                        "(T_in, C, H, W), uint8 or float in [0, 1]; read memory-mapped, batch by batch")
    p.add_argument("--output", required=True,
                   help=".npy to write, (N, N_out, C, H, W) float32 (with --stream: (N, T_in, C, H, W))")
    p.add_argument("--frames", type=int, help="frames to predict (default: the trained horizon)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-clip", action="store_true",
                   help="write the raw model outputs (default: clipped to [0, 1], the range of frames)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.add_argument("--stream", action="store_true",
                   help="running forecasts, frame by frame (model.step): the input .npy is memory-mapped and read "
                        "one frame per sequence at a time; writes (N, T_in, C, H, W) where [n, t] is the forecast "
                        "of frame t+1 made after input frames 0..t of sequence n (--frames does not apply)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("visualize", help="PNG grid and animated GIF of predictions")
    p.add_argument("source", help="a run directory, checkpoint or export folder (uses its test split), or a predict "
                                   ".npy")
    p.add_argument("--input", help="with a predict .npy: the input frames .npy it was made from")
    p.add_argument("--truth", help="with a predict .npy: optional true future frames .npy")
    p.add_argument("--samples", default="0,1,2,3", help="comma-separated sample indices (distinct, >= 0)")
    p.add_argument("--out", help="output folder (default: next to the source; an export folder itself)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="overwrite the PNG and GIFs of an earlier visualize")
    p.set_defaults(func=_visualize)


def _parameters(cfg) -> int | None:
    """The exact parameter count of ``cfg``'s model (built on the meta device: nothing allocated); the frame's
    channel count from the config or the dataset's spec (a dataset whose shape only its data tells: 1)."""
    from stcsnn.data import frame_shape_of
    from stcsnn.errors import StcsnnError
    from stcsnn.models import meta_parameters

    try:
        shape = frame_shape_of(cfg)
    except StcsnnError:
        shape = (1, cfg.patch_size, cfg.patch_size)
    return meta_parameters(cfg, tuple(shape))


def _train(args: argparse.Namespace) -> int:
    from stcsnn.config import check_training, load_config, parse_overrides
    from stcsnn.models.loading import read_checkpoint
    from stcsnn.train.loop import train

    overrides = parse_overrides(args.set)
    for key, flag in (("device", args.device), ("amp", args.amp), ("checkpoint_steps", args.checkpoint_steps)):
        if flag is not None:
            overrides[key] = flag
    for key, flag in (("compile", args.compile), ("tensorboard", args.tensorboard)):
        if flag:
            overrides[key] = True
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

        loaded = (source, read_checkpoint(source))  # read once: the trainer continues from it
        cfg = make_config(loaded[1]["config"], overrides)
        out = args.out or str(source.parent)
    else:
        loaded = None
        cfg = load_config(args.config, overrides)
        out = args.out or str(Path("runs") / Path(args.config).stem)
    # the lower bound first (it keeps absurd sizes away from the model builder), then the exact count; the trainer
    # checks again once the data gives the frame shape
    check_training(cfg, overrides, args.config)
    check_training(cfg, overrides, args.config, _parameters(cfg))
    # train() locks the folder (creating it only then), checks that it is this run's, and cleans up on failure
    choice = getattr(args, "thread_choice", None)
    tune = choice is not None and choice.auto  # an explicit count is the user's to keep
    return train(cfg, out, args.resume, progress=not args.quiet, tune_threads=tune, thread_choice=choice,
                 given=set(overrides), loaded=loaded)


def _eval(args: argparse.Namespace) -> int:
    from stcsnn.config import check_memory, checkpoint_config, parse_overrides
    from stcsnn.device import pick_device
    from stcsnn.errors import CheckpointError, ConfigError
    from stcsnn.io import RunLock, check_writable
    from stcsnn.metrics import metric_line
    from stcsnn.models.loading import WEIGHTS_NAME, load_model
    from stcsnn.runs import SHA_KEY, eval_folder, file_sha256
    from stcsnn.train.evaluate import evaluate_model, run_metrics, write_report
    from stcsnn.train.signals import Terminated, sigterm_held, sigterm_raises

    overrides = parse_overrides(args.set)
    try:
        model, saved = load_model(args.checkpoint, "cpu")
    except ConfigError as exc:  # the stored config itself is refused (out of range, hostile, ...)
        raise CheckpointError(f"checkpoint {str(args.checkpoint)!r} holds a config that is not valid: {exc}") from None
    # every override is checked (and model keys refused) before the device, the data or the output are touched
    cfg = checkpoint_config(saved, overrides)
    check_memory(cfg, training=False, batch=cfg.eval_batch_size or cfg.batch_size)  # one batch's frames must fit
    device = pick_device(args.device or (cfg.device if "device" in overrides else "auto"))
    model = model.to(device)
    stem = "report" if args.split == "test" else f"report_{args.split}"
    names = [f"{stem}.json", f"{stem}.md", "predictions.png" if stem == "report" else f"{stem}_predictions.png"]
    ckpt = Path(args.checkpoint)
    # what the report is about (export matches by it): the checkpoint file, or an export folder's weights
    weights = ckpt / WEIGHTS_NAME if ckpt.is_dir() else ckpt
    sha = file_sha256(weights) if weights.is_file() else None
    out = eval_folder(args.checkpoint, args.out, names, sha)
    check_writable(out / names[0])
    paths: list[Path] = []
    try:
        # SIGTERM ends the evaluation as an exception: the lock (and a folder it made) go with it
        with sigterm_raises(), RunLock(out, "stcsnn eval"):
            out = eval_folder(args.checkpoint, args.out, names, sha)  # again, now that the folder is ours
            dataset = _eval_split(cfg, model, saved, args.split)
            results, samples = evaluate_model(model, dataset, cfg, device, cfg.max_test_batches,
                                              keep=cfg.num_visualize)
            meta = {"split": args.split, "checkpoint": str(args.checkpoint), SHA_KEY: sha, "dataset": cfg.dataset,
                    "neuron": cfg.neuron, "num_samples": results["num_samples"], "split_samples": len(dataset),
                    "input_frames": cfg.input_frames, "output_frames": cfg.output_frames}
            with sigterm_held():  # the report's files are written together, or not at all
                paths = write_report(out, results, meta, samples, stem=stem)
    except Terminated:
        done = "after writing " + ", ".join(str(p) for p in paths) if paths else "before writing any report"
        print(f"SIGTERM: evaluation stopped {done}", file=sys.stderr)
        return 143
    n = results["num_samples"]
    label = args.split if n == len(dataset) else f"{args.split} ({n} of {len(dataset)} sequences)"
    print(f"{label}: {metric_line(results, run_metrics(cfg))}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _eval_split(cfg, model: torch.nn.Module, saved, split: str):
    """The split to evaluate, checked against the checkpoint's model (channels, patch size; a note for another
    frame size)."""
    from stcsnn.data import build_splits

    dataset = build_splits(cfg, (split,))[split]
    c, h, w = dataset.frame_shape
    if c != model.frame_channels:
        raise DataError(f"the checkpoint's model takes {model.frame_channels}-channel frames; the {cfg.dataset!r} "
                        f"{split} split has {c} channels ({c}x{h}x{w}); evaluate it on its own kind of data")
    if h % cfg.patch_size or w % cfg.patch_size:
        raise DataError(f"the checkpoint's model has patch_size {cfg.patch_size}, which must divide the frame size; "
                        f"the {cfg.dataset!r} {split} split has {h}x{w} frames")
    if saved.frame_shape and [c, h, w] != list(saved.frame_shape):
        print(f"note: evaluating on {h}x{w} frames; the model was trained on {saved.frame_shape[1]}x"
              f"{saved.frame_shape[2]}", file=sys.stderr)
    return dataset


def _predict(args: argparse.Namespace) -> int:
    """``stcsnn predict``: open the input frames (memory-mapped), check that a batch fits in memory and the output
    on disk, then predict and write batch by batch."""
    from stcsnn.device import pick_device
    from stcsnn.io import check_writable
    from stcsnn.models.loading import load_model
    from stcsnn.train.predict import check_fits, check_input_values, forecast_batches, open_inputs, write_prediction

    device = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    if args.stream and args.frames is not None:
        raise StcsnnError("--stream writes one forecast per input frame (N, T_in, C, H, W); --frames does not "
                          "apply: drop one of the two")
    frames = open_inputs(args.input, model.frame_channels)  # memory-mapped: read batch by batch below
    if not args.stream:  # --stream reads each frame once, when its turn comes (and checks it then)
        check_input_values(frames, args.input)
    n_out = args.frames if args.frames is not None else cfg.output_frames
    _check_predict_args(args, n_out)
    check_writable(args.output)
    n_future = None if args.stream else n_out
    shape = check_fits(model, tuple(frames.shape), n_future, args.batch_size, device, args.output)
    batches = forecast_batches(model, frames, args.input, n_future, args.batch_size, device)
    lo, hi = write_prediction(args.output, shape, batches, args.input, clip=not args.no_clip)
    clipped = not args.no_clip and (lo < 0.0 or hi > 1.0)
    note = (f"; raw values in [{lo:.3g}, {hi:.3g}] clipped to [0, 1] (--no-clip keeps them)" if clipped
            else "; raw values, not clipped" if args.no_clip else "")
    what = (f"the forecast of the next frame after each of {frames.shape[1]} input frames" if args.stream
            else f"{frames.shape[1]} input frames -> {n_out} predicted")
    print(f"wrote {args.output}: {shape} float32 ({what}){note}")
    if cfg.frame_shape and list(frames.shape[3:]) != list(cfg.frame_shape[1:]):
        # after the work, so that a failure is still reported as one line
        print(f"note: frames are {frames.shape[3]}x{frames.shape[4]}, the model was trained on "
              f"{cfg.frame_shape[1]}x{cfg.frame_shape[2]}", file=sys.stderr)
    return 0


def _check_predict_args(args: argparse.Namespace, n_out: int) -> None:
    """``--frames``, ``--batch-size`` and ``--output`` (a new .npy path, or an existing one with ``--force``)."""
    if n_out < 1:
        raise StcsnnError(f"--frames must be >= 1, got {n_out}")
    if args.batch_size < 1:
        raise StcsnnError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.output.endswith(".npy"):
        raise StcsnnError(f"--output must be a .npy path, got {args.output!r}")
    if Path(args.output).is_dir():
        raise StcsnnError(f"--output {args.output!r} is a directory; expected a .npy file path")
    if Path(args.output).exists() and not args.force:
        raise StcsnnError(f"--output {args.output!r} already exists; expected a new path (or --force to "
                          "overwrite it)")


def parse_samples(text: str) -> list[int]:
    """``"0,2,5"`` -> [0, 2, 5]: distinct non-negative integers, at least one, no empty entries."""
    parts = [s.strip() for s in text.split(",")]
    try:
        idx = [int(s) for s in parts]
    except ValueError:
        raise StcsnnError(f"--samples expects comma-separated integers such as 0,1,2, got {text!r}") from None
    if any(i < 0 for i in idx):
        raise StcsnnError(f"--samples expects indices >= 0, got {text!r}")
    dup = sorted({i for i in idx if idx.count(i) > 1})
    if dup:
        raise StcsnnError(f"--samples expects distinct indices, got {text!r} ({', '.join(map(str, dup))} "
                          "repeated)")
    return idx


def _visualize(args: argparse.Namespace) -> int:
    """``stcsnn visualize``: gather the samples (a predict output, or a checkpoint's test split), draw them."""
    from stcsnn.device import pick_device
    from stcsnn.train import predict
    from stcsnn.viz import grid_title, require_viz, write_samples

    require_viz("stcsnn visualize")  # before any (possibly long) evaluation
    idx = parse_samples(args.samples)
    src = Path(args.source)
    if src.suffix == ".npy":
        samples = predict.read_predict_output(str(src), args.input, args.truth)
        out = Path(args.out) if args.out else src.parent
        stem = src.stem
        neuron, shown, where = None, src, f"inputs {args.input}"
        _check_visualize_out(out, stem, idx, args.force)
    else:
        from stcsnn.models.loading import load_model

        ckpt = predict.run_checkpoint(src)
        device = pick_device(args.device)
        model, cfg = load_model(ckpt, device)
        out = Path(args.out) if args.out else ckpt if ckpt.is_dir() else ckpt.parent
        stem = "visualize"
        _check_visualize_out(out, stem, idx, args.force)  # before the (possibly long) evaluation
        samples = predict.first_test_samples(model, cfg, device, max(idx) + 1)
        neuron, shown, where = cfg.neuron, ckpt, f"{cfg.dataset} test"
    chosen = predict.select_samples(samples, idx)
    where += ", metrics of the samples shown" if chosen.scores else ""
    title = grid_title(neuron, shown, chosen.scores, where)
    try:
        written = write_samples(out, stem, chosen.inputs, chosen.truth, chosen.pred, idx, title=title)
    except OSError as exc:
        raise StcsnnError(f"cannot write into {str(out)!r}: {exc.strerror or exc}") from None
    print("wrote " + ", ".join(str(p) for p in written) + "".join(f"; {m}" for m in chosen.notes))
    return 0


def _check_visualize_out(out: Path, stem: str, idx: list[int], force: bool) -> None:
    """The pictures ``visualize`` writes (``viz.sample_paths``) can be written: the folder is writable, and none
    of them exists yet unless ``force``."""
    from stcsnn.io import check_writable
    from stcsnn.viz import sample_paths

    paths = sample_paths(out, stem, idx)
    check_writable(paths[0])
    for path in paths:
        if path.is_dir():
            raise StcsnnError(f"{str(path)!r} is a folder; expected the picture to write there (use another --out)")
        if (path.exists() or path.is_symlink()) and not force:
            raise StcsnnError(f"{str(path)!r} already exists; expected a new path (or --force to overwrite the "
                              "pictures; nothing was changed)")
