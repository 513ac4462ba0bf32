"""``stcsnn import-official``: convert a checkpoint of the paper's reference implementation; ``stcsnn export``: a
checkpoint as a pickle-free folder (safetensors + JSON + model card, optionally an ONNX step)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stcsnn.errors import CheckpointError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert a checkpoint of the STC paper's reference code (OpenSTL fork) to an stcsnn checkpoint",
        description="Convert the state_dict of a reference <Neuron>_Model (or a dict holding one under "
                    "'state_dict'; DDP 'module.' prefixes are stripped) into an stcsnn checkpoint that "
                    "`stcsnn eval` / `stcsnn predict` read. The config gives the architecture; the "
                    "reference's behaviours (PLIF input gain, frozen GLIF gates) are selected and recorded.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="the reference .pth (loaded with weights_only=True)")
    p.add_argument("--config", required=True,
                   help="YAML config describing the model (neuron, hidden_channels, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nesting; value parsed as YAML); repeatable")
    p.add_argument("--out", required=True, metavar="OUT.pt",
                   help="the stcsnn checkpoint to write (atomically); an existing file is refused without --force")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out (only once the import has succeeded: a failure keeps it)")
    p.set_defaults(func=_import_official)

    p = sub.add_parser(
        "export",
        help="write a checkpoint as a folder anyone can load without pickle (safetensors, config.json, model card)",
        description="Write DIR/model.safetensors (the weights), DIR/config.json (the full config) and DIR/README.md "
                    "(a model card: neuron, data, architecture, training budget, test metrics from the "
                    "report.json beside the checkpoint). `stcsnn.load_model(DIR)` and every --checkpoint option "
                    "read the folder (no pickle) and predict exactly what the checkpoint predicts. --onnx adds "
                    "DIR/step.onnx: the streaming step, its state as explicit inputs state_l<layer>_<field> and "
                    "outputs next_state_l<layer>_<field> (zeros to start), checked against PyTorch with "
                    "onnxruntime.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="the stcsnn checkpoint (.pt) to export")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the folder to write (new or empty; one that holds files is refused without --force)")
    p.add_argument("--onnx", action="store_true",
                   help='also write step.onnx (opset 17, dynamic batch); needs pip install "stcsnn[onnx]"')
    p.add_argument("--force", action="store_true",
                   help="write into a folder that already holds files (the export's files are replaced, a step.onnx "
                        "there regenerated for the new weights; a failure keeps them as they were)")
    p.add_argument("--push", metavar="USER/REPO",
                   help='then upload the folder to this Hugging Face Hub model repository (pip install '
                        '"stcsnn[hub]"; log in first with `hf auth login` or HF_TOKEN)')
    p.set_defaults(func=_export)


def _import_official(args: argparse.Namespace) -> int:
    from stcsnn.config import load_config, parse_overrides
    from stcsnn.data import resolve_config_shape
    from stcsnn.io import RunLock, atomic_torch_save
    from stcsnn.models.loading import model_checkpoint
    from stcsnn.models.official import import_official, reference_config
    from stcsnn.runs import check_import_target

    # frame shape filled from the dataset spec: the model needs it and the checkpoint records it
    cfg = resolve_config_shape(load_config(args.config, parse_overrides(args.set)))
    src, out = Path(args.checkpoint), Path(args.out)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise CheckpointError(f"--out {str(out)!r} is the input checkpoint; write the import to another file")
    if out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a folder; expected the checkpoint file to write, e.g. "
                              f"{str(out / 'best.pt')!r}")
    # the folder is locked while we write into it (a train running there is refused, and refuses us)
    check_import_target(out, args.force)  # before the lock, which would create the folder
    with RunLock(out.parent, "stcsnn import-official"):
        check_import_target(out, args.force)  # again, now that the folder is ours
        ref_cfg = reference_config(cfg)
        model, info = import_official(src, cfg)
        for key, value in info["behaviours"].items():
            name = key.split(".", 1)[1]
            if name in cfg.neuron_options and cfg.neuron_options[name] != value:
                print(f"note: {key} set to {value!r} (the reference's behaviour), the config had "
                      f"{cfg.neuron_options[name]!r}")
        atomic_torch_save(model_checkpoint(model, ref_cfg, imported_from=info), out)
    chosen = ", ".join(f"{k}={v!r}" for k, v in info["behaviours"].items()) or "none needed"
    ignored = len(info["ignored_keys"])
    print(f"imported {info['reference_model']} ({cfg.neuron}, {len(model.cells)} layers, hidden "
          f"{model.hidden_channels}) from {str(src)!r}: {info['source_keys']} keys"
          + (f", {ignored} unused by the reference's forward ignored" if ignored else ""))
    print(f"reference behaviours: {chosen}")
    print(f"wrote {str(out)!r}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import shlex

    from stcsnn.models.export import ONNX_NAME, export, push
    from stcsnn.models.loading import HF_PREFIX, hub_module, parse_hub_source

    if args.push:  # checked before any work: a typo or a missing package is one line, nothing written
        try:
            parse_hub_source(HF_PREFIX + args.push)
        except CheckpointError:
            raise CheckpointError(f"--push {args.push!r}: expected USER/REPO, a Hugging Face Hub model repository "
                                  "(e.g. --push alice/stc-lif-mmnist)") from None
        hub_module()
    command = ["stcsnn", "export", args.checkpoint, "--out", args.out]
    command += ["--onnx"] * args.onnx + ["--force"] * args.force + (["--push", args.push] if args.push else [])
    result = export(args.checkpoint, args.out, onnx=args.onnx, force=args.force, command=shlex.join(command))
    cfg = result["config"]
    print(f"exported {cfg.neuron} (hidden {cfg.hidden_channels}) from {args.checkpoint!r}")
    if result["onnx_regenerated"]:
        print(f"note: {args.out} held {ONNX_NAME} of an earlier export: regenerated for the new weights")
    if result["onnx_max_diff"] is not None:
        print(f"onnxruntime check of {ONNX_NAME}: max |ONNX - PyTorch| {result['onnx_max_diff']:.3g} over 3 steps")
    print("wrote " + ", ".join(str(p) for p in result["files"]))
    if args.push:
        url = push(args.out, args.push, result["files"])
        print(f"uploaded to {url} (load it with stcsnn.load_model({HF_PREFIX + args.push!r}))")
    return 0
