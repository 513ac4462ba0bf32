"""The spiking neuron library: every cell is ``spike, state = cell(x, state)`` with explicit state.

One file per neuron (its equations as a pure function, its module, optionally its fused update, its
registration); :mod:`stcsnn.neurons.base` holds the contract, :mod:`stcsnn.neurons.stc` the STC circuit,
:mod:`stcsnn.neurons.registry` creating neurons by name. Importing this package registers every built-in
neuron (the imports below, in registration order).
"""

from stcsnn.neurons.base import Cell, SpikingCell, Synapse

# Import order = registration order = the order of `stcsnn neurons`, the grids and the configs.
# isort: off
from stcsnn.neurons.lif import IF, LIF, PLIF, MembraneState
from stcsnn.neurons.glif import GLIF, GLIFState
from stcsnn.neurons.tclif import TCLIF, TwoCompartmentState
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.stc import STC, Autapse, fuse_pathways, register_stc, split_pathways
from stcsnn.neurons.convlstm import ConvLSTMCell, LSTMState
# isort: on
from stcsnn.neurons.layer import NeuronLayer, build_layer
from stcsnn.neurons.registry import (
    NEURONS,
    build_neuron,
    get_spec,
    list_neurons,
    register_neuron,
    spiking_neurons,
)
from stcsnn.neurons.surrogate import SURROGATES, Surrogate, spike

__all__ = [
    "GLIF", "IF", "LIF", "LMH", "NEURONS", "PLIF", "STC", "SURROGATES", "TCLIF",
    "Autapse", "Cell", "ConvLSTMCell", "GLIFState", "LSTMState", "MembraneState", "NeuronLayer", "SpikingCell",
    "Surrogate", "Synapse", "TwoCompartmentState", "build_layer", "build_neuron", "fuse_pathways", "get_spec",
    "list_neurons", "register_neuron", "register_stc", "spike", "spiking_neurons", "split_pathways",
]
