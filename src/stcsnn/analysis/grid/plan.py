"""Planning a ``stcsnn reproduce`` grid: a scale (:mod:`stcsnn.analysis.scales`) and the request -> its cells.

Nothing is trained or written here: the request is validated (names registered, seeds, horizon) and every
cell's config built, so that a bad request is one error line before any work starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stcsnn.analysis.grid.cells import Cell, Grid
from stcsnn.analysis.scales import DEFAULT_MODELS, MAX_SEEDS, SCALES
from stcsnn.config import MAX_SEED, Config, make_config, read_yaml
from stcsnn.errors import ConfigError


def get_scale(scale: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, definition)`` of a scale given by name or as a dict (``name`` key optional)."""
    if isinstance(scale, dict):
        return str(scale.get("name", "custom")), scale
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}: expected one of {', '.join(SCALES)}")
    return scale, SCALES[scale]


def _configs_dir(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    here = Path("configs")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[4] / "configs"


def paper_config(template: str, configs: Path, dataset: str, model: str, log: Callable[[str], None]) -> dict:
    """The reference config of ``dataset`` (one file per dataset: the reference settings are the same for every
    model, ``scripts/make_configs.py``) with ``model``'s neuron in it; ``log`` is kept for the caller's notes."""
    path = Path(template.format(configs=configs, dataset=dataset, model=model))
    if not path.is_file():
        raise ConfigError(f"no reference config {str(path)!r}; generate it with `python scripts/make_configs.py` "
                          "or pass --configs DIR")
    raw = read_yaml(path)
    if raw.get("neuron") != model:
        raw["neuron"] = model
        raw["neuron_options"] = {}  # the file's options belong to its own neuron
    return raw


def parse_seeds(text: str | int | Sequence[int] | None) -> int | list[int] | None:
    """``"3"`` -> 3 (seeds 0, 1, 2); ``"0,2"`` -> [0, 2]; ``"1-3"`` -> [1, 2, 3]; ``"4,"`` -> [4]."""
    if text is None or isinstance(text, int) or (isinstance(text, Sequence) and not isinstance(text, str)):
        return text  # type: ignore[return-value]
    text = str(text).strip()
    try:
        if "," not in text and "-" not in text:
            return int(text)
        seeds: list[int] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            seeds += _seed_range(int(lo), int(hi), text) if sep else [int(lo)]
    except ConfigError:  # (a ValueError too) a range too long: its own message
        raise
    except ValueError:
        raise ConfigError(f"--seeds expects a count N (seeds 0..N-1) or a list such as 0,2 or 1-3, got {text!r}"
                          ) from None
    if not seeds:
        raise ConfigError(f"--seeds expects a count N (seeds 0..N-1) or a list such as 0,2 or 1-3, got {text!r}")
    return seeds


def _seed_range(lo: int, hi: int, given: object) -> list[int]:
    """Seeds ``lo..hi``, refused before the list is built when there are more than :data:`MAX_SEEDS` or the last
    is above the config's ``MAX_SEED``."""
    if hi - lo + 1 > MAX_SEEDS or hi > MAX_SEED:
        raise ConfigError(f"--seeds must give at most {MAX_SEEDS} seeds, each 0..{MAX_SEED}, got {given}")
    return list(range(lo, hi + 1))


def _seed_list(seeds: int | Sequence[int] | None, default: int) -> list[int]:
    if seeds is None:
        seeds = default
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        return _seed_range(0, seeds - 1, seeds)
    out = [int(s) for s in seeds]
    if len(out) > MAX_SEEDS or max(out, default=0) > MAX_SEED:
        raise ConfigError(f"--seeds must give at most {MAX_SEEDS} seeds, each 0..{MAX_SEED}, got {len(out)} seeds "
                          f"up to {max(out)}")
    if any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"--seeds must list distinct seeds >= 0, got {','.join(map(str, out))}")
    return out


def missing_files(dataset: str, cfg: Config) -> list[Path]:
    """The files ``dataset`` needs under ``cfg``'s data root that are absent ([] for generated data)."""
    from stcsnn.data.registry import get_dataset_spec

    return [path for _, path in get_dataset_spec(dataset).files(cfg.data_root) if not path.is_file()]


def data_note(dataset: str, cfg: Config) -> str:
    """Where ``dataset``'s sequences come from, for the caption."""
    from stcsnn.data.registry import get_dataset_spec

    # the cells' own data options (one garment on a 40x40 canvas, say) amend the dataset's default description
    options = "; data_options: " + ", ".join(f"{k} = {v}" for k, v in cfg.data_options.items()) \
        if cfg.data_options else ""
    if dataset == "embedded":
        return ("embedded: Moving Fashion-MNIST generated from the Fashion-MNIST subset shipped with stcsnn "
                "(2,000 train / 500 test images, src/stcsnn/data/embedded)" + options)
    spec = get_dataset_spec(dataset)
    files = [str(path) for _, path in spec.files(cfg.data_root) if path.is_file()]
    return f"{dataset}: {spec.description}" + (f", from {', '.join(files)}" if files else "") + options


def _check_request(models: list[str], datasets: list[str], horizon: int | None) -> None:
    """Every name registered, none twice, a non-negative horizon (one error line otherwise)."""
    from stcsnn.data.registry import get_dataset_spec
    from stcsnn.neurons.registry import get_spec

    if horizon is not None and horizon < 0:
        raise ConfigError(f"--horizon must be 0 (no long-term evaluation) or a frame count, got {horizon}")
    for m in models:
        get_spec(m)
    for d in datasets:
        get_dataset_spec(d)
    if len(set(models)) != len(models) or len(set(datasets)) != len(datasets):
        raise ConfigError("--models and --datasets must not repeat a name")


def _choose_datasets(labels: list[str], sources: dict[str, tuple[str, dict[str, Any]]], spec: dict[str, Any],
                     explicit: bool, probe_config: Callable, log: Callable[[str], None]
                     ) -> tuple[list[str], dict[str, str]]:
    """The dataset labels the grid uses (a default dataset whose files are absent replaced by the scale's fallback,
    said in a note; ``sources`` gains the fallback) and the caption note of each. ``sources``: label -> (the
    registered dataset, the variant's overrides); only the registered name reaches the data registry."""
    notes: dict[str, str] = {}
    chosen = []
    for label in labels:
        d, variant = sources[label]
        fallback = None if variant else (spec.get("fallback") or {}).get(d)
        probe = probe_config(label)
        lacking = missing_files(d, probe)
        if lacking and fallback and not explicit:
            sources[fallback] = (fallback, {})
            note = (f"{data_note(fallback, probe_config(fallback))}, in place of {d}: "
                    f"{d}'s files were not found ({', '.join(map(str, lacking))}; `apt-get install "
                    f"dataset-fashion-mnist` or `stcsnn data prepare {d}` provides them)")
            log(f"note: {note}")
            notes[fallback] = note
            chosen.append(fallback)
        else:
            notes[label] = data_note(d, probe) + (f"; variant {label}: {_flat(variant)}" if variant else "")
            chosen.append(label)
    return chosen, notes


def _flat(overrides: dict[str, Any], prefix: str = "") -> str:
    """``{"data_options": {"delay": 5}, "input_frames": 7}`` -> ``"data_options.delay = 5, input_frames = 7"``."""
    return ", ".join(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k} = {json.dumps(v)}"
                     for k, v in overrides.items())


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``overrides`` over it, nested dicts merged key by key (``base`` is untouched)."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _sources(spec: dict[str, Any], name: str, datasets: list[str] | None) -> tuple[list[str], dict]:
    """The requested dataset labels and, per label, (the registered dataset, the variant's config overrides).
    Without ``variants`` a label is its dataset; with them each variant is a label over the scale's one dataset
    and ``datasets`` (``--datasets``) selects variants by label."""
    variants: dict[str, dict[str, Any]] = spec.get("variants") or {}
    if not variants:
        labels = list(datasets or spec.get("datasets") or ["embedded"])
        return labels, {d: (d, {}) for d in labels}
    real = list(spec.get("datasets") or [])
    if len(real) != 1:
        raise ConfigError(f"scale {name!r}: variants need exactly one dataset in 'datasets', found {real}")
    labels = list(datasets or variants)
    unknown = [d for d in labels if d not in variants]
    if unknown:
        raise ConfigError(f"--datasets on scale {name!r} selects its variants: expected some of "
                          f"{', '.join(variants)}, got {', '.join(unknown)}")
    return labels, {label: (real[0], variants[label]) for label in labels}


def _model_seeds(spec: dict[str, Any], name: str, seed_list: list[int]) -> dict[str, list[int]]:
    """Per model named in the scale's ``model_seeds``, the first N of the requested seeds."""
    out = {}
    for model, n in (spec.get("model_seeds") or {}).items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"scale {name!r}: model_seeds of {model!r} must be a count >= 1, got {n!r}")
        out[model] = seed_list[:n]
    return out


def _model_options(spec: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The scale's ``model_options``: per model, neuron options merged over its cells' ``neuron_options``."""
    from stcsnn.neurons.registry import COMMON_OPTIONS, get_spec

    out = spec.get("model_options") or {}
    for model, opts in out.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"scale {name!r}: model_options of {model!r} must be a mapping of neuron options, "
                              f"got {opts!r}")
        valid = (*COMMON_OPTIONS, *get_spec(model).options)
        unknown = sorted(set(opts) - set(valid))
        if unknown:
            raise ConfigError(f"scale {name!r}: model_options of {model!r}: no option {unknown[0]!r} (it takes "
                              f"{', '.join(valid)})")
    return out


def plan_grid(scale: str | dict[str, Any], datasets: Sequence[str] | None = None,
              models: Sequence[str] | None = None, seeds: int | Sequence[int] | None = None,
              out: str | os.PathLike = "runs/reproduce", overrides: dict[str, Any] | None = None,
              configs: str | os.PathLike | None = None, log: Callable[[str], None] = print,
              horizon: int | None = None) -> Grid:
    """Validate the request and build every cell's config (nothing is trained or written).

    Default datasets whose files are absent are replaced by the scale's ``fallback`` (logged, and stated in
    the table's caption); datasets named explicitly are used as named. A scale with ``variants`` makes each
    variant a dataset label of its own (``--datasets`` selects labels), the cells' configs holding the scale's
    dataset with the variant's overrides; ``model_seeds`` limits a model to the first N seeds; ``model_options``
    adds a model's neuron options to its cells' configs. ``horizon``:
    frames of the long-term evaluation (None: the scale's, else 3 x ``output_frames``; 0: none)."""
    name, spec = get_scale(scale)
    explicit = datasets is not None
    labels, sources = _sources(spec, name, list(datasets) if datasets is not None else None)
    models = list(models or spec.get("models") or DEFAULT_MODELS)
    seed_list = _seed_list(seeds, int(spec.get("seeds", 1)))
    per_model = _model_seeds(spec, name, seed_list)
    model_options = _model_options(spec, name)
    if horizon is None:
        horizon = spec.get("horizon")
    _check_request(models, list(dict.fromkeys(d for d, _ in sources.values())), horizon)
    if len(set(labels)) != len(labels):
        raise ConfigError("--models and --datasets must not repeat a name")
    root = Path(out) / name

    def raw_config(label: str, m: str, s: int) -> dict:
        d, variant = sources[label]
        if "config_files" in spec:
            raw = paper_config(spec["config_files"], _configs_dir(configs), d, m, log)
        else:
            raw = json.loads(json.dumps(spec.get("config", {})))  # a deep copy of plain data
        raw = deep_merge(raw, variant)
        raw.update({"dataset": d, "neuron": m, "seed": s})
        if m in model_options:
            raw["neuron_options"] = {**(raw.get("neuron_options") or {}), **model_options[m]}
        return raw

    def config(label: str, m: str, s: int) -> Config:
        try:
            return make_config(raw_config(label, m, s), overrides)
        except ConfigError as exc:
            raise ConfigError(f"scale {name!r}, {label}/{m}: {exc}") from None

    chosen, notes = _choose_datasets(labels, sources, spec, explicit,
                                     lambda d: config(d, models[0], seed_list[0]), log)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"datasets {', '.join(labels)} resolve to {', '.join(chosen)}: a dataset twice")
    cells = []
    # seed by seed (every model of seed 0, then of seed 1, ...): a grid stopped part-way has whole seeds of
    # every pair, which the paired statistics can use, instead of every seed of the first models only
    for d in chosen:
        for s in seed_list:
            for m in (m for m in models if s in per_model.get(m, seed_list)):
                cfg = config(d, m, s)
                h = 3 * cfg.output_frames if horizon is None else int(horizon)
                if h and h <= cfg.output_frames:
                    raise ConfigError(f"--horizon must exceed the trained output_frames ({cfg.output_frames}) or "
                                      f"be 0 (no long-term evaluation), got {h}")
                cells.append(Cell(d, m, s, cfg, root / d / m / f"seed{s}", h))
    variants = {d: sources[d][1] for d in chosen if sources[d][1]}
    comparisons = [(a, b) for a, b in spec.get("comparisons", ()) if a in models and b in models]
    return Grid(name, root, cells, horizon, notes, variants, comparisons)
