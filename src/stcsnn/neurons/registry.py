"""Neurons by name: configs, the CLI, the analyses and the tests all iterate the same list.

Registration sits beside each definition (``@register_neuron("lif", "...")`` on the class, or
:func:`stcsnn.neurons.stc.register_stc` for an STC composition ``STC(base)``), so adding a neuron is one file:

>>> @register_neuron("my_lif", "my leaky neuron")        # doctest: +SKIP
... class MyLIF(SpikingCell): ...
>>> cell = build_neuron("stc_lif", in_channels=4, hidden_channels=32, kernel_size=5)

The registry is a container: it imports no neuron (each neuron module imports it and registers itself;
importing :mod:`stcsnn.neurons` imports the built-in ones). An STC composition's spec holds the circuit class it
is built with, handed over by :mod:`stcsnn.neurons.stc` at registration.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stcsnn.config import quoted
from stcsnn.errors import StcsnnError

COMMON_OPTIONS = ("surrogate", "alpha")


@dataclass(frozen=True)
class NeuronSpec:
    """What the registry knows of a neuron: everything else (configs, the CLI, ``reproduce``'s pairs, the analyses)
    asks it rather than deriving facts from names.

    ``kind``: ``"snn"`` (spiking) or ``"ann"`` (a real-valued baseline cell such as ConvLSTM), declared by the
    class's ``is_ann``. ``base``: for an STC neuron, the registered name of the neuron it wraps (``stc_lif`` is
    ``STC(IF)``: its base is ``if``, not ``lif``), ``None`` otherwise or where the wrapped class is not registered.
    ``module``: the module that registered the neuron (``stcsnn.neurons.lif``, or a plugin's ``my_neuron``):
    a checkpoint of a neuron that is not built in records it, so that loading it elsewhere can name the
    ``--plugin`` it needs.
    """

    name: str
    description: str
    cls: type  # the neuron class (for an STC composition: its base neuron's class)
    is_stc: bool = False  # True: built as circuit(cls(...)), the STC circuit around the base neuron
    kind: str = "snn"
    base: str | None = None
    module: str | None = None
    circuit: type | None = None  # an STC composition's circuit (stcsnn.neurons.stc.STC)
    pathways: str = "both"  # an STC composition's default ``pathways`` option (an ablation keeps one)
    temporal_gain: str = "free"  # an STC composition's default ``temporal_gain`` option (an intervention's)

    @property
    def built_in(self) -> bool:
        """Registered by stcsnn itself (a neuron module of this package), not by a plugin."""
        return (self.module or "").startswith("stcsnn.")

    @property
    def options(self) -> tuple[str, ...]:
        """The options beyond ``surrogate`` and ``alpha`` this neuron accepts."""
        extra = ("gradient_detach", "pathways", "temporal_gain") if self.is_stc else ()
        return tuple(self.cls.options) + extra

    @property
    def is_ann(self) -> bool:
        return self.kind == "ann"


NEURONS: dict[str, NeuronSpec] = {}


def _add(spec: NeuronSpec) -> None:
    if spec.name in NEURONS:
        raise StcsnnError(f"neuron {spec.name!r} is already registered")
    NEURONS[spec.name] = spec


def register_neuron(name: str, description: str, cls: type | None = None) -> Callable:
    """Register a neuron class under ``name`` (also for user-defined neurons following the cell contract of
    :mod:`stcsnn.neurons.base`). Use as a class decorator, or call with ``cls``."""

    def decorate(c: type) -> type:
        _add(NeuronSpec(name, description, c, kind="ann" if getattr(c, "is_ann", False) else "snn",
                        module=c.__module__))
        return c

    return decorate if cls is None else decorate(cls)


def add_stc(name: str, base: type, description: str, circuit: type, base_name: str | None, module: str | None,
            pathways: str = "both", temporal_gain: str = "free") -> None:
    """Record ``circuit(base(...))`` under ``name``: what :func:`stcsnn.neurons.stc.register_stc` (the public
    form, which supplies the circuit and the calling module) registers."""
    if base_name is None:
        base_name = next((s.name for s in NEURONS.values() if s.cls is base and not s.is_stc), None)
    elif base_name not in NEURONS or NEURONS[base_name].cls is not base:
        raise StcsnnError(f"register_stc({name!r}): base_name {base_name!r} is not a registered neuron of class "
                          f"{base.__name__}")
    _add(NeuronSpec(name, description, base, is_stc=True, base=base_name, module=module, circuit=circuit,
                    pathways=pathways, temporal_gain=temporal_gain))


#: entry-point group through which installed packages add neurons (loaded when a name is not registered)
ENTRY_POINT_GROUP = "stcsnn.plugins"
_entry_points_loaded = False


def load_plugin(module: str) -> None:
    """Import ``module`` so that its ``@register_neuron`` / :func:`register_stc` calls run (the CLI's
    ``--plugin``). ``module`` is a module name (``my_neurons``, found on ``sys.path``) or the path of a ``.py`` file
    (``./my_neuron.py``, imported by path as the module ``my_neuron``). A plugin is code the user chose to run:
    configs only *name* neurons, they never import. Any failure is one StcsnnError naming the plugin."""
    import importlib

    what = f"cannot import plugin {quoted(module)}"
    is_path = module.endswith(".py") or "/" in module or (os.sep != "/" and os.sep in module)
    if not is_path and not all(part.isidentifier() for part in module.split(".")):
        raise StcsnnError(f"{what}: expected a module name (e.g. my_neurons or package.module) or the path of a "
                          ".py file (e.g. ./my_neuron.py)")
    try:
        if is_path:
            _import_file(module, what)
        else:
            importlib.import_module(module)
    except StcsnnError:
        raise
    except ModuleNotFoundError as exc:
        # the plugin itself (or its package) is not on the path, rather than something the plugin imports
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise StcsnnError(f"{what}: {exc} (is its folder on PYTHONPATH? or give the path of its .py file)"
                              ) from None
        raise StcsnnError(f"{what}: it raised ModuleNotFoundError: {exc}") from None
    except (Exception, SystemExit) as exc:  # the plugin's own code failed (an error at import, or sys.exit)
        raise StcsnnError(f"{what}: it raised {type(exc).__name__}: {exc}") from None


def _import_file(path_text: str, what: str) -> None:
    """Import the ``.py`` file at ``path_text`` as the module named by its file name (once: a second
    ``--plugin`` of the same file is a no-op)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        found = "a folder" if path.is_dir() else "nothing" if not path.exists() else "another kind of file"
        raise StcsnnError(f"{what}: expected a Python file (.py), found {found} there")
    name = path.stem
    if not name.isidentifier():
        raise StcsnnError(f"{what}: the file name must be a Python module name (letters, digits, _), found "
                          f"{name!r}")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path.resolve():
            return
        raise StcsnnError(f"{what}: a module named {name!r} is already imported (from "
                          f"{getattr(loaded, '__file__', None) or 'built in'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StcsnnError(f"{what}: Python cannot load this file as a module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # registered first, as import does: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _load_entry_points() -> None:
    """Register the neurons of installed packages that declare an ``stcsnn.plugins`` entry point (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def get_spec(name: str) -> NeuronSpec:
    if name not in NEURONS:
        _load_entry_points()
    if name not in NEURONS:
        hint = difflib.get_close_matches(str(name)[:100], NEURONS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise StcsnnError(f"unknown neuron {quoted(name)}{did_you_mean}: expected one of {', '.join(NEURONS)}")
    return NEURONS[name]


def plugins_of(name: str) -> list[dict[str, str]]:
    """The plugins the registered neuron ``name`` needs: ``[{"module": ..., "file": ...}]`` for each module
    outside stcsnn that registered it or, for an STC composition, its base neuron (empty for a built-in neuron).
    ``file``: the name of the module's file (``my_neuron.py``), for ``--plugin ./my_neuron.py``."""
    import sys

    spec = get_spec(name)
    specs = [spec] + ([NEURONS[spec.base]] if spec.base in NEURONS else [])
    modules = [s.module for s in specs if s.module and not s.built_in]
    if spec.is_stc and spec.base is None and not (spec.cls.__module__ or "").startswith("stcsnn."):
        modules.append(spec.cls.__module__)  # an unregistered base class: its module defines it
    out = []
    for module in dict.fromkeys(modules):
        path = getattr(sys.modules.get(module), "__file__", None)
        out.append({"module": module, "file": os.path.basename(path) if path else ""})
    return out


def stc_pairs(names) -> list[tuple[str, str]]:
    """``[(stc, base), ...]``: each STC neuron among ``names`` whose declared base is among them too (the
    registry's fact, never the name: ``stc_lif`` pairs with ``if``)."""
    names = list(names)
    return [(n, get_spec(n).base) for n in names
            if n in NEURONS and get_spec(n).is_stc and get_spec(n).base in names]


def list_neurons() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]`` in registration order."""
    return [(s.name, s.description) for s in NEURONS.values()]


def spiking_neurons() -> list[str]:
    """Names of the registered spiking neurons (every entry but the ANN baselines)."""
    return [s.name for s in NEURONS.values() if not s.is_ann]


def build_neuron(name: str, in_channels: int | None, hidden_channels: int, kernel_size: int = 5, *, dims: int = 2,
                 **options: Any):
    """Create a registered neuron. ``options``: ``surrogate``, ``alpha`` and the neuron's own options
    (``gradient_detach`` for STC neurons, ``input_gain`` for (STC-)PLIF, ``train_gates`` for (STC-)GLIF).
    An option the neuron does not have is an error. ``in_channels=None`` and ``dims`` (the STC autapse's
    spatial dimensions) are for :func:`stcsnn.neurons.layer.build_layer`: a spiking neuron without synapse."""
    spec = get_spec(name)
    unknown = set(options) - set(COMMON_OPTIONS) - set(spec.options)
    if unknown:
        valid = ", ".join(sorted(set(COMMON_OPTIONS) | set(spec.options)))
        raise StcsnnError(f"neuron {name!r} has no option {', '.join(sorted(unknown))}: expected one of {valid}")
    options = {k: v for k, v in options.items() if v is not None or k not in COMMON_OPTIONS}
    if spec.is_stc:
        detach = options.pop("gradient_detach", False)
        kept = options.pop("pathways", spec.pathways)
        temporal = options.pop("temporal_gain", spec.temporal_gain)
        return spec.circuit(spec.cls(in_channels, hidden_channels, kernel_size, **options), gradient_detach=detach,
                            dims=dims, pathways=kept, temporal_gain=temporal)
    return spec.cls(in_channels, hidden_channels, kernel_size, **options)
