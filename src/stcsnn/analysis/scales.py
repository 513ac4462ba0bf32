"""The scales of ``stcsnn reproduce``: plain data, edited here and nowhere else.

A scale gives the default datasets, models, seeds and long-evaluation horizon, and the config keys of every
cell of the grid (on top of the :class:`~stcsnn.config.Config` defaults; the cell sets ``dataset``, ``neuron``
and ``seed``). ``fallback`` names, per default dataset, the dataset used when the first one's files are absent
(the table's caption says so). ``paper`` instead reads ``configs/<dataset>/reference.yaml`` (the reference
hyper-parameters, ``scripts/make_configs.py``) with each model's neuron set in it. ``help`` is the scale's
line in ``stcsnn reproduce --help``.

``variants`` (optional) maps a label to config overrides, deep-merged over ``config`` (``data_options`` key by
key): each label is a dataset of its own in the grid (its folder, its table section, its references) with the
scale's one dataset under it. ``model_seeds`` (optional) maps a model to how many of the requested seeds it
trains (the first N), for models that cost many times a step of the others.
"""

from __future__ import annotations

from typing import Any

#: The grid's default models (tiny, paper): the paper's neurons, IF (the base STC-LIF wraps) and the ANN baseline.
DEFAULT_MODELS = ("if", "lif", "plif", "glif", "tclif", "lmh", "stc_lif", "stc_plif", "stc_lmh", "convlstm")

#: The most seeds a grid takes (``--seeds``): each is one training per model, and the list is built in memory.
MAX_SEEDS = 1000

#: The ``small`` grid: the three STC neurons, each after its declared base neuron (the registry's ``base``:
#: ``stc_lif`` wraps ``if``), paired by seed; ``lif``, the paper's own comparison for STC-LIF, first.
SMALL_MODELS = ("lif", "if", "stc_lif", "plif", "stc_plif", "lmh", "stc_lmh")

SCALES: dict[str, dict[str, Any]] = {
    # The whole default grid for one seed on 2 CPU cores in well under 20 minutes: the embedded Moving
    # Fashion-MNIST subset, two narrow layers, 400 steps of batch 8 (scheduled sampling reaches fully
    # autoregressive training at step 250), validation on 32 and test on 128 sequences. Measured with
    # --threads 1 on a busy 2-core machine, training + evaluation: LIF 32 s, STC-LM-H 86 s, ConvLSTM 105 s.
    "tiny": {
        "help": "minutes on 2 CPU cores: every default model, one seed, the embedded data",
        "datasets": ["embedded"],
        "models": DEFAULT_MODELS,
        "seeds": 1,
        "horizon": 30,
        "config": {
            "hidden_channels": [16, 16], "kernel_size": 5, "patch_size": 4,
            "input_frames": 10, "output_frames": 10,
            "batch_size": 8, "eval_batch_size": 16, "epochs": 4, "steps_per_epoch": 100,
            "lr": 3.0e-3, "min_lr": 1.0e-4, "warmup_epochs": 1, "warmup_lr": 3.0e-4,
            "sampling": "scheduled", "sampling_changing_rate": 0.004, "sampling_stop_iter": 250,
            "max_val_batches": 2, "max_test_batches": 8, "num_visualize": 4, "device": "auto",
        },
    },
    # (Measured with six models, before `if` joined as stc_lif's base and validation ran every epoch: the seventh
    # model adds about a seventh, IF costing about what LIF does, and 7 more validations of 4 batches per cell
    # add about 10 s a cell: now about 2 h 20 min for 21 cells.)
    # Six models x 3 seeds = 18 cells in under 2 hours on 2 quiet CPU cores: `stcsnn --threads 2 reproduce
    # --scale small --jobs 2` (two cells at a time, one thread each, STC cells first). The arithmetic:
    # * timed single-thread training steps (batch 4, 10 -> 10 frames of 1x64x64, 3 x 64 channels, kernel 5,
    #   patch 4; 10 steps after 2 warm-up) on this project's 2-core machine with about one other process
    #   running (load 1.2-2.3, what two jobs see): LIF 0.41 s, PLIF 0.44, LM-H 0.48, STC-LIF 0.69, STC-PLIF
    #   0.68, STC-LM-H 0.77 -- 3.47 s for one step of all six;
    # * one real cell, `stcsnn --threads 1 reproduce --scale small --models stc_lif --seeds 1` with 1200 steps,
    #   same load: 17.0 min -- training and 3 validations 948 s (0.79 s a step: data generation and the loop
    #   add 15% to the timed step), test report 22 s, 30-frame evaluation 46 s, start-up and counts 5 s;
    # * grid at 1000 steps: 3 seeds x 1000 x 3.47 s x 1.15 = 11,970 s of training, plus evaluation (STC cells
    #   ~70 s, the others ~40 s) 3 x (3 x 70 + 3 x 40) = 990 s, plus 18 x 5 s of start-up = 13,050 s; two at a
    #   time: 6,525 s = 109 min. (1200 steps: 129 min; 1500 steps: 159 min -- over budget.)
    # * check, one real cell at these settings: `stcsnn --threads 1 reproduce --scale small --models lif
    #   --seeds 1`, load 1.4-2.1: 9.3 min (555 s, predicted 517 s: training and 3 validations 509 s, test 14 s,
    #   30-frame evaluation 29 s). 7% over the prediction: the whole grid, about 117 min.
    # * measured, the whole default grid with that command (load 0.7-2.2): 2 h 0 min 06 s; cells STC 910-984 s,
    #   base neurons 563-655 s (results/small/, README "Results").
    # On a busier machine it takes longer: a first cell with 1500 steps while other engineers' test suites ran
    # (load 2.5-4.3) trained at 1.23 s a step, 1.6x the above. Fewer steps: --set epochs=N (100 steps each).
    "small": {
        "help": "the STC neurons and their bases, paired by seed, on Moving Fashion-MNIST; hours on 2 CPU cores",
        "datasets": ["mfmnist"],
        "fallback": {"mfmnist": "embedded"},
        "models": SMALL_MODELS,
        "seeds": 3,
        "horizon": 30,
        "config": {
            "hidden_channels": [64, 64, 64], "kernel_size": 5, "patch_size": 4,
            "input_frames": 10, "output_frames": 10,
            "batch_size": 4, "eval_batch_size": 16, "epochs": 10, "steps_per_epoch": 100,
            "lr": 1.0e-3, "min_lr": 1.0e-5, "warmup_epochs": 1, "warmup_lr": 1.0e-4,
            # eta falls from 1 to 0 over the first ~670 steps, then fully autoregressive training
            "sampling": "scheduled", "sampling_changing_rate": 1.5e-3, "sampling_stop_iter": 700,
            # validation every epoch: after scheduled sampling ends (epoch 7) each epoch's weights are candidates
            # for best.pt, and the selected epoch (runs.csv) is then the best of every epoch, not of every 4th
            "val_every": 1, "max_val_batches": 4, "max_test_batches": 16, "num_visualize": 4, "device": "auto",
        },
    },
    # The paper's reference hyper-parameters (hours to days on GPUs).
    "paper": {
        "help": "the paper's reference hyper-parameters from configs/<dataset>/reference.yaml (GPUs)",
        "datasets": ["mmnist"],
        "models": DEFAULT_MODELS,
        "seeds": 1,
        "config_files": "{configs}/{dataset}/reference.yaml",
    },
}

#: The delays (blank frames between showing an image and recalling it) of the ``recall`` scale's variants.
RECALL_DELAYS = (0, 5, 10, 20)
#: Frames the recall image is shown: ``stcsnn.data.recall.RECALL_DEFAULTS["show"]``, repeated here because that
#: module imports torch and this one must not (the command line reads it); a test asserts the two agree.
RECALL_SHOW = 2

# The memory task: the ``small`` scale's training on ``recall`` at each delay of RECALL_DELAYS (input_frames =
# show + delay, the data's own rule), two recalled frames; no long horizon (the task has none beyond the recall).
SCALES["recall"] = {
    "help": "the memory task: the small scale's models x 3 seeds on recall at delays "
            + ", ".join(map(str, RECALL_DELAYS)) + " (a dataset label recall_d<D> each)",
    "datasets": ["recall"],
    "models": SMALL_MODELS,
    "seeds": 3,
    "horizon": 0,
    "config": {**SCALES["small"]["config"], "output_frames": 2},
    "variants": {f"recall_d{d}": {"data_options": {"delay": d}, "input_frames": RECALL_SHOW + d}
                 for d in RECALL_DELAYS},
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
