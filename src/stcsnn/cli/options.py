"""Options shared by the analysis commands (``energy``, ``analyze``): standard library only, like every module
of the command line."""

from __future__ import annotations

import argparse

from stcsnn.errors import StcsnnError


def model_args(p: argparse.ArgumentParser, config_required: bool = False, many: bool = False) -> None:
    """The options that choose the model and the data, shared by ``energy`` and ``analyze``."""
    p.add_argument("--config", required=config_required,
                   help="YAML config (model and data); optional with --checkpoint, which holds its own config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nesting; value parsed as YAML); repeatable")
    if many:
        p.add_argument("--checkpoint", metavar="CKPT", action="append",
                       help="trained weights; repeatable, e.g. a LIF and an STC-LIF run side by side (default: "
                            "fresh models seeded by `seed`)")
    else:
        p.add_argument("--checkpoint", metavar="CKPT",
                       help="trained weights (default: a fresh model seeded by `seed`)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default test)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")


def split_names(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ["a", "b"] (None stays None); a list of no names is refused."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise StcsnnError(f"expected a comma-separated list of names, got {text!r}")
    return names


# ---------------------------------------------------------------------------------------------- energy
