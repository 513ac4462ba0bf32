"""stcsnn: spatio-temporal predictive learning with spiking neural networks.

The Spatio-Temporal Circuit (STC) neuron of Wang & Yu, "Autaptic Synaptic Circuit Enhances Spatio-temporal
Predictive Learning of Spiking Neural Networks" (ICML 2024), its baselines (LIF, PLIF, GLIF, TC-LIF, LM-H),
the predictor, datasets, OpenSTL-compatible metrics, training and analysis tools.
"""

__version__ = "0.1.0"

from stcsnn import neurons  # noqa: E402,F401
from stcsnn.errors import StcsnnError  # noqa: E402,F401


def load_config(path=None, overrides=None):
    """``stcsnn.load_config("configs/mmnist/stc_lif.yaml", overrides={"epochs": 1})`` -> Config."""
    from stcsnn.config import load_config as _load

    return _load(path, overrides)


def build_model(cfg):
    """The :class:`~stcsnn.models.SpikingPredictor` a config describes; ``model(inputs, n_future=N)``."""
    from stcsnn.models import build_model as _build

    return _build(cfg)


def load_model(path, device="cpu"):
    """``model, cfg = stcsnn.load_model("runs/quickstart/best.pt")``."""
    from stcsnn.models.loading import load_model as _load

    return _load(path, device)
