"""Write configs/<dataset>/reference.yaml for every dataset that has reference settings.

One file per dataset, with the paper's neuron (STC-LIF); every other neuron is the same file with
``--set neuron=NAME`` (``stcsnn reproduce --scale paper`` does exactly that), so adding a neuron needs no new file.
Run after changing a reference hyper-parameter: ``python scripts/make_configs.py``. The files are plain YAML data;
edit the settings here and in the dataset specs, not the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stcsnn.data import DATASETS

ROOT = Path(__file__).resolve().parents[1] / "configs"

# Reference hyper-parameters (the paper's code) shared by every dataset: hidden 256x3, kernel 5, batch 16, Adam
# lr 1e-3, cosine with 10 warm-up epochs from 1e-5 and min lr 1e-5. The per-dataset ones (frames, patch size,
# gradient_detach, epoch budget) are each dataset spec's default frames and ``reference`` (src/stcsnn/data/).
REFERENCE_NEURON = "stc_lif"  # the paper's model; `--set neuron=lif` (or any registered name) for the others
NAME = "reference.yaml"
COMMON = {
    "data_root": None, "hidden_channels": [256, 256, 256], "kernel_size": 5, "batch_size": 16, "lr": 1.0e-3,
    "min_lr": 1.0e-5, "warmup_epochs": 10, "warmup_lr": 1.0e-5, "sampling": "scheduled", "seed": 0,
    "device": "auto",
}


def main() -> None:
    for dataset, spec in DATASETS.items():
        if not spec.reference:
            continue  # no reference setting (the embedded subset, the user's own arrays)
        settings = {"input_frames": spec.input_frames, "output_frames": spec.output_frames, **spec.reference}
        folder = ROOT / dataset
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"dataset": dataset, "neuron": REFERENCE_NEURON, **COMMON, **settings}
        head = (f"# The reference setting on {dataset} "
                "(the paper's code's hyper-parameters; scripts/make_configs.py).\n"
                f"# Neuron {REFERENCE_NEURON}; another one: --set neuron=NAME (the names of `stcsnn neurons`).\n")
        (folder / NAME).write_text(head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


if __name__ == "__main__":
    main()
