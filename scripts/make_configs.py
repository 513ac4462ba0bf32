"""Write configs/<dataset>/<neuron>.yaml for every dataset and registered neuron (the reference settings).

Run after adding a neuron or changing a reference hyper-parameter: ``python scripts/make_configs.py``.
The files are plain YAML data; edit the table below, not the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stcsnn.neurons import list_neurons

ROOT = Path(__file__).resolve().parents[1] / "configs"

# Reference hyper-parameters (the paper's code): hidden 256x3, kernel 5, batch 16, Adam lr 1e-3, cosine with
# 10 warm-up epochs from 1e-5 and min lr 1e-5. Epoch budgets: 500 for Moving MNIST (the paper); for the others
# OpenSTL's benchmark budgets, which the paper's tables are compared against: Moving Fashion-MNIST 200,
# TaxiBJ 50, KTH 100.
DATASETS = {
    "mmnist": {"input_frames": 10, "output_frames": 10, "patch_size": 2, "gradient_detach": False, "epochs": 500},
    "mfmnist": {"input_frames": 10, "output_frames": 10, "patch_size": 2, "gradient_detach": False, "epochs": 200},
    "taxibj": {"input_frames": 4, "output_frames": 4, "patch_size": 1, "gradient_detach": True, "epochs": 50},
    "kth": {"input_frames": 10, "output_frames": 20, "patch_size": 4, "gradient_detach": True, "epochs": 100},
}
COMMON = {
    "data_root": None, "hidden_channels": [256, 256, 256], "kernel_size": 5, "batch_size": 16, "lr": 1.0e-3,
    "min_lr": 1.0e-5, "warmup_epochs": 10, "warmup_lr": 1.0e-5, "sampling": "scheduled", "seed": 0,
    "device": "auto",
}


def main() -> None:
    for dataset, settings in DATASETS.items():
        folder = ROOT / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for neuron, description in list_neurons():
            cfg = {"dataset": dataset, "neuron": neuron, **COMMON, **settings}
            head = f"# {description}\n# on {dataset}, with the reference hyper-parameters (scripts/make_configs.py)\n"
            (folder / f"{neuron}.yaml").write_text(head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


if __name__ == "__main__":
    main()
