"""The scales of ``stcsnn reproduce``: plain data, edited here and nowhere else.

A scale gives the default datasets and the config keys of every cell of the grid (on top of the
:class:`~stcsnn.config.Config` defaults; the cell sets ``dataset``, ``neuron`` and ``seed``). ``paper``
instead reads ``configs/<dataset>/<model>.yaml`` (the reference hyper-parameters, ``scripts/make_configs.py``).
"""

from __future__ import annotations

from typing import Any

#: The grid's default models: the eight neurons of the paper's comparison and the ANN baseline.
DEFAULT_MODELS = ("lif", "plif", "glif", "tclif", "lmh", "stc_lif", "stc_plif", "stc_lmh", "convlstm")

SCALES: dict[str, dict[str, Any]] = {
    # The whole default grid for one seed on 2 CPU cores in well under 20 minutes: the embedded Moving
    # Fashion-MNIST subset, two narrow layers, 400 steps of batch 8 (scheduled sampling reaches fully
    # autoregressive training at step 250), validation on 32 and test on 128 sequences. Measured with
    # --threads 1 on a busy 2-core machine, training + evaluation: LIF 32 s, STC-LM-H 86 s, ConvLSTM 105 s.
    "tiny": {
        "datasets": ["embedded"],
        "config": {
            "hidden_channels": [16, 16], "kernel_size": 5, "patch_size": 4,
            "input_frames": 10, "output_frames": 10,
            "batch_size": 8, "eval_batch_size": 16, "epochs": 4, "steps_per_epoch": 100,
            "lr": 3.0e-3, "min_lr": 1.0e-4, "warmup_epochs": 1, "warmup_lr": 3.0e-4,
            "sampling": "scheduled", "sampling_changing_rate": 0.004, "sampling_stop_iter": 250,
            "max_val_batches": 2, "max_test_batches": 8, "num_visualize": 4, "device": "auto",
        },
    },
    # A few hours on a CPU for the default grid (estimated from steps timed on one busy core: 0.5-1 s a step
    # for the SNNs, ~3 s for ConvLSTM, which dominates), minutes a model on a GPU: three layers of 64, 1500
    # steps of batch 8, validation on 128 and test on 800 sequences.
    "small": {
        "datasets": ["embedded"],
        "config": {
            "hidden_channels": [64, 64, 64], "kernel_size": 5, "patch_size": 4,
            "input_frames": 10, "output_frames": 10,
            "batch_size": 8, "eval_batch_size": 32, "epochs": 15, "steps_per_epoch": 100,
            "lr": 1.0e-3, "min_lr": 1.0e-5, "warmup_epochs": 1, "warmup_lr": 1.0e-4,
            "sampling": "scheduled", "sampling_changing_rate": 1.0e-3, "sampling_stop_iter": 1000,
            "max_val_batches": 4, "max_test_batches": 25, "num_visualize": 4, "device": "auto",
        },
    },
    # The paper's reference hyper-parameters (hours to days on GPUs).
    "paper": {
        "datasets": ["mmnist"],
        "config_files": "{configs}/{dataset}/{model}.yaml",
    },
}

#: Outside references, printed next to (never in place of) stcsnn's own measurements.
REFERENCES: dict[str, list[dict[str, Any]]] = {
    "mmnist": [
        {"model": "ConvLSTM", "mse": 29.80, "mae": 90.64, "ssim": 0.9288, "psnr": 22.10,
         "source": "OpenSTL benchmark, Moving MNIST 10 -> 10, 200 epochs"},
        {"model": "PredRNN", "mse": 23.97, "mae": 72.82, "ssim": 0.9462, "psnr": 23.28,
         "source": "OpenSTL benchmark, Moving MNIST 10 -> 10, 200 epochs"},
    ],
    "taxibj": [
        {"model": "PredRNN", "mse": 0.3194, "source": "OpenSTL benchmark, TaxiBJ 4 -> 4"},
    ],
}
