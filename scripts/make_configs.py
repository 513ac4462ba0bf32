"""Write configs/<dataset>/<neuron>.yaml for every dataset and registered neuron (the reference settings).

Run after adding a neuron or changing a reference hyper-parameter: ``python scripts/make_configs.py``.
The files are plain YAML data; edit the settings here and in the dataset specs, not the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stcsnn.data import DATASETS
from stcsnn.neurons import list_neurons

ROOT = Path(__file__).resolve().parents[1] / "configs"

# Reference hyper-parameters (the paper's code) shared by every dataset: hidden 256x3, kernel 5, batch 16, Adam
# lr 1e-3, cosine with 10 warm-up epochs from 1e-5 and min lr 1e-5. The per-dataset ones (frames, patch size,
# gradient_detach, epoch budget) are each dataset spec's default frames and ``reference`` (src/stcsnn/data/).
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
        for neuron, description in list_neurons():
            cfg = {"dataset": dataset, "neuron": neuron, **COMMON, **settings}
            head = f"# {description}\n# on {dataset}, with the reference hyper-parameters (scripts/make_configs.py)\n"
            (folder / f"{neuron}.yaml").write_text(head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


if __name__ == "__main__":
    main()
