"""Datasets for spatio-temporal prediction, built by name.

>>> train = build_dataset("embedded", "train")      # works offline: ships with the package
>>> inputs, targets = train[0]                      # float32 (10, 1, 64, 64) each, values in [0, 1]

Names: ``embedded``, ``mmnist``, ``mfmnist``, ``taxibj``, ``kth``, ``npy`` (see :data:`DATASETS`); each is
declared, with its files, default frames and frame shape, by a :class:`DatasetSpec` in its own module. Files are
read from the data root (``root`` argument, else ``$STCSNN_DATA``, else ``./data``) in OpenSTL's layout::

    <root>/moving_mnist/{train-images-idx3-ubyte.gz, mnist_test_seq.npy}
    <root>/moving_fmnist/{train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz}
    <root>/taxibj/dataset.npz
    <root>/kth/<action>/<personXX_action_dY_uncomp>/image_NNNN.jpg

``stcsnn data prepare NAME`` downloads them; ``stcsnn data info NAME`` shows what is there.
"""

from stcsnn.data.base import SPLITS, SequenceDataset, resolve_root
from stcsnn.data.registry import (
    DATASETS,
    DatasetSpec,
    build_dataset,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)

# The dataset modules register their specs when imported; this order is the order of `stcsnn data list`.
from stcsnn.data import moving, recall, taxibj, kth, arrays  # noqa: F401  isort: skip
from stcsnn.data.splits import (
    build_split,
    build_splits,
    frame_shape_of,
    resolve_config_shape,
    resolve_frame_shape,
)

__all__ = ["DATASETS", "SPLITS", "DatasetSpec", "SequenceDataset", "build_dataset", "build_split", "build_splits",
           "frame_shape_of", "get_dataset_spec", "list_datasets", "register_dataset", "resolve_config_shape",
           "resolve_frame_shape", "resolve_root"]
