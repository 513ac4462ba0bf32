"""torch.hub entry points for stcsnn.

``torch.hub.load(REPO, "stc_lif", source="local", hidden_channels=[16], frame_shape=[1, 16, 16])`` returns a
fresh :class:`stcsnn.models.SpikingPredictor` for that neuron; the keyword arguments are config keys
(``stcsnn.config.Config``; dotted keys such as ``data_options.canvas_size`` work too). There is one entry point
per registered neuron (the names of ``stcsnn neurons``), generated from the registry, and
``load(path_or_hf)`` returns a pretrained model: an ``stcsnn export`` folder, ``hf://user/repo[@revision]`` or a
checkpoint file. Importing this file imports only stcsnn's neuron registry and torch.

From a bare clone (stcsnn not installed, only torch) the clone's own ``src/`` is used: torch.hub puts the
repository on ``sys.path``, but the package lives one folder down.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("stcsnn") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

import stcsnn.neurons as _neurons  # noqa: E402

dependencies = ["torch"]


def _entry(name: str, description: str):
    def entry(**overrides):
        import stcsnn
        from stcsnn.config import make_config
        from stcsnn.errors import ConfigError

        if "neuron" in overrides:
            raise ConfigError(f"the {name!r} entry point builds neuron {name!r}; expected no neuron= override, "
                              f"found neuron={overrides['neuron']!r} (use that entry point instead)")
        cfg = make_config({"neuron": name}, overrides)
        if cfg.frame_shape is None:  # the dataset's frame shape: asks stcsnn.data (which needs numpy)
            return stcsnn.build_model(cfg)
        from stcsnn.models import build_model  # frame_shape given: torch alone suffices

        return build_model(cfg)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"A fresh (untrained) stcsnn predictor of {name!r} neurons: {description}.\n\n"
                     "Keyword arguments are config keys (hidden_channels, kernel_size, patch_size, frame_shape, "
                     "neuron_options, seed, ...).")
    return entry


for _name, _description in _neurons.list_neurons():
    globals()[_name] = _entry(_name, _description)


def load(source, device="cpu"):
    """A pretrained model (eval mode): an ``stcsnn export`` folder, ``hf://user/repo[@revision]`` (needs
    ``pip install "stcsnn[hub]"``) or a checkpoint file."""
    import stcsnn

    model, _ = stcsnn.load_model(source, device)
    return model
