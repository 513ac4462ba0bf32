"""stcsnn: spatio-temporal predictive learning with spiking neural networks.

The Spatio-Temporal Circuit (STC) neuron of Wang & Yu, "Autaptic Synaptic Circuit Enhances Spatio-temporal
Predictive Learning of Spiking Neural Networks" (ICML 2024), its baselines (LIF, PLIF, GLIF, TC-LIF, LM-H),
the predictor, datasets, OpenSTL-compatible metrics, training and analysis tools.
"""

__version__ = "0.1.0"

from stcsnn import neurons  # noqa: E402,F401
from stcsnn.errors import StcsnnError  # noqa: E402,F401
