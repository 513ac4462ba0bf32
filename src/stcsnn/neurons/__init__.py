"""The spiking neuron library: every cell is ``spike, state = cell(x, state)`` with explicit state.

See :mod:`stcsnn.neurons.base` for the contract, :mod:`stcsnn.neurons.stc` for the STC circuit and
:mod:`stcsnn.neurons.registry` for creating neurons by name.
"""

from stcsnn.neurons.base import SpikingCell, Synapse
from stcsnn.neurons.glif import GLIF, GLIFState
from stcsnn.neurons.lif import IF, LIF, PLIF, MembraneState
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.registry import NEURONS, build_neuron, get_spec, list_neurons, register_neuron
from stcsnn.neurons.stc import STC, STCLIF, STCLMH, STCPLIF, Autapse, fuse_pathways, split_pathways
from stcsnn.neurons.surrogate import SURROGATES, Surrogate, spike
from stcsnn.neurons.tclif import TCLIF, TwoCompartmentState

__all__ = [
    "GLIF", "IF", "LIF", "LMH", "NEURONS", "PLIF", "STC", "STCLIF", "STCLMH", "STCPLIF", "SURROGATES", "TCLIF",
    "Autapse", "GLIFState", "MembraneState", "SpikingCell", "Surrogate", "Synapse", "TwoCompartmentState",
    "build_neuron", "fuse_pathways", "get_spec", "list_neurons", "register_neuron", "spike", "split_pathways",
]
