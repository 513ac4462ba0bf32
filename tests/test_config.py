"""Config validation, ``--set`` overrides and the shipped YAML files under configs/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stcsnn.config import Config, load_config, make_config, parse_overrides, parse_value
from stcsnn.data import frame_shape_of
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.neurons import list_neurons

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("mmnist", "mfmnist", "taxibj", "kth")
NEURONS = [name for name, _ in list_neurons()]
REQUIRED = ("dataset", "data_root", "neuron", "hidden_channels", "kernel_size", "patch_size", "input_frames",
            "output_frames", "gradient_detach", "batch_size", "epochs", "lr", "seed", "device")


# ----------------------------------------------------------------------------------------------- keys and types

def test_required_keys_are_config_fields():
    fields = Config().to_dict()
    for key in REQUIRED:
        assert key in fields


@pytest.mark.parametrize("key,nearest", [("hiden_channels", "hidden_channels"), ("epoch", "epochs"),
                                         ("learning_rat", None), ("patchsize", "patch_size")])
def test_unknown_key_suggests_the_nearest(key, nearest):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'") as err:
        make_config({key: 1})
    if nearest:
        assert f"did you mean '{nearest}'" in str(err.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("neuron: stc_lif\nkernal_size: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'kernal_size' \(did you mean 'kernel_size'\?\)") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_unknown_override_suggests_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        make_config({}, {"bach_size": "4"})
    with pytest.raises(ConfigError, match="did you mean 'data_options'"):
        make_config({}, {"data_option.num_samples": "4"})


@pytest.mark.parametrize("key,value,expected", [
    ("epochs", "ten", "int"), ("epochs", 1.5, "int"), ("batch_size", True, "bool"),
    ("hidden_channels", 64, "list"), ("hidden_channels", [64, "a"], r"hidden_channels\[1\]"),
    ("gradient_detach", "yes", "bool"), ("lr", "fast", "float"), ("lr", [1], "float"),
    ("data_options", [1, 2], "dict"), ("neuron", 3, "str"), ("frame_shape", "1x64x64", "list"),
])
def test_wrong_types_name_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        make_config({key: value})
    assert repr(key) in str(err.value) or key in str(err.value)


def test_type_coercions_that_are_meant():
    cfg = make_config({"lr": 1, "min_lr": "1e-6", "grad_clip": None, "eval_batch_size": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.min_lr == 1e-6
    assert cfg.grad_clip is None


@pytest.mark.parametrize("key,value,match", [
    ("loss", "l1", "loss"), ("sampling", "sometimes", "sampling"), ("amp", "fp8", "amp"),
    ("epochs", 0, "epochs"), ("batch_size", -1, "batch_size"), ("kernel_size", 4, "odd"),
    ("hidden_channels", [], "at least one"), ("grad_clip", -1, "'grad_clip' must be null or > 0, got -1"),
    ("val_every", 0, "'val_every' must be >= 1"), ("lr", float("nan"), "'lr' must be a finite number > 0"),
    ("steps_per_epoch", -1, "'steps_per_epoch' must be null or >= 1"),
])
def test_invalid_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        make_config({key: value})


# ----------------------------------------------------------------------------------------------- --set parsing

def test_parse_value_is_yaml():
    assert parse_value("[64,64,64]") == [64, 64, 64]
    assert parse_value("null") is None
    assert parse_value("true") is True
    assert parse_value("stc_lif") == "stc_lif"
    assert parse_value("1e-3") == "1e-3"  # YAML 1.1: a string, converted by the float fields below
    with pytest.raises(ConfigError, match=r"value .\[1, 2. is not valid YAML"):
        parse_value("[1, 2")


def test_overrides():
    over = parse_overrides(["hidden_channels=[64,64,64]", "data_options.num_samples=4", "lr=1e-3",
                            "data_options.canvas_size=48", "neuron=lif", "grad_clip=null", "gradient_detach=true"])
    assert over["hidden_channels"] == "[64,64,64]"
    cfg = make_config({"data_options": {"val_samples": 2}}, over)
    assert cfg.hidden_channels == [64, 64, 64]
    assert cfg.data_options == {"val_samples": 2, "num_samples": 4, "canvas_size": 48}
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.neuron == "lif" and cfg.grad_clip is None and cfg.gradient_detach is True


def test_override_value_with_equals_sign_and_spaces():
    over = parse_overrides([" neuron =lif", "data_options.path=/a=b.npy"])
    assert over == {"neuron": "lif", "data_options.path": "/a=b.npy"}


@pytest.mark.parametrize("item", ["hidden_channels", "=3", ""])
def test_override_needs_key_and_value(item):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([item])


def test_dotted_override_on_a_non_mapping_key():
    with pytest.raises(ConfigError, match="not a mapping"):
        make_config({}, {"lr.value": "1"})
    with pytest.raises(ConfigError, match="'data_options.num_samples' is 4, not a mapping"):
        make_config({"data_options": {"num_samples": 4}}, {"data_options.num_samples.x": "1"})


def test_yaml_11_float_strings_in_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmin_lr: 5e-6\nwarmup_lr: 1.0e-5\n")
    cfg = load_config(path, {"weight_decay": "1e-4"})
    assert (cfg.lr, cfg.min_lr, cfg.warmup_lr, cfg.weight_decay) == (1e-3, 5e-6, 1e-5, 1e-4)


def test_override_beats_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nhidden_channels: [32, 32]\n")
    cfg = load_config(path, {"epochs": "2", "hidden_channels": "[16]"})
    assert cfg.epochs == 2 and cfg.hidden_channels == [16]


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    code = tmp_path / "code.yaml"
    code.write_text("neuron: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(code)
    twice = tmp_path / "twice.yaml"
    twice.write_text("epochs: 2\nlr: 0.1\nepochs: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'epochs' on line 3 \\(first on line 1\\)"):
        load_config(twice)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


# ----------------------------------------------------------------------------------------------- impossible combos

def test_patch_size_must_divide_the_frame():
    with pytest.raises(ConfigError, match="patch_size 4 must divide"):
        make_config({"patch_size": 4, "frame_shape": [1, 30, 30]})
    make_config({"patch_size": 3, "frame_shape": [1, 30, 30]})


def test_patch_size_must_divide_the_dataset_frames(tmp_path):
    """Caught when the trainer learns the frame size from the data (canvas 36 with patch 8)."""
    from stcsnn.train.loop import Trainer

    cfg = make_config({"dataset": "embedded", "patch_size": 8, "hidden_channels": [16], "device": "cpu",
                       "data_options": {"canvas_size": 36, "num_samples": 2, "val_samples": 1, "test_samples": 1}})
    with pytest.raises(ConfigError, match="patch_size 8 must divide"):
        Trainer(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("hidden", [[8], [64, 40], [0], [-16]])
def test_hidden_channels_must_be_multiples_of_16(hidden):
    with pytest.raises(ConfigError, match="multiple of 16"):
        make_config({"hidden_channels": hidden})


def test_more_input_frames_than_the_data_has(tmp_path):
    from stcsnn.train.loop import Trainer

    path = tmp_path / "videos.npy"
    np.save(path, np.random.default_rng(0).random((10, 6, 1, 16, 16), dtype=np.float32))
    cfg = make_config({"dataset": "npy", "data_options": {"path": str(path)}, "input_frames": 5,
                       "output_frames": 3, "hidden_channels": [16], "patch_size": 4, "device": "cpu"})
    with pytest.raises(StcsnnError, match="5 \\+ 3 = 8 frames, found 6"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_frame_shape_that_disagrees_with_the_data(tmp_path):
    from stcsnn.train.loop import Trainer

    cfg = make_config({"dataset": "embedded", "frame_shape": [1, 64, 64], "hidden_channels": [16],
                       "device": "cpu", "data_options": {"canvas_size": 32, "num_samples": 2, "val_samples": 1,
                                                          "test_samples": 1}})
    with pytest.raises(ConfigError, match="does not match"):
        Trainer(cfg, tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------------------------- shipped configs

def all_yaml() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def test_configs_folder_holds_one_reference_and_one_tiny_config_per_dataset():
    assert sorted(str(p.relative_to(CONFIGS)) for p in all_yaml()) == sorted(
        ["quickstart.yaml", *(f"{d}/{n}.yaml" for d in DATASETS for n in ("reference", "tiny"))])


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    c, h, w = frame_shape_of(cfg)
    assert h % cfg.patch_size == 0 and w % cfg.patch_size == 0
    assert cfg.neuron in NEURONS
    assert cfg.input_frames + cfg.output_frames >= 2


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("neuron", NEURONS)
def test_reference_config_exists_with_required_keys(dataset, neuron):
    """One reference config per dataset (the paper's neuron); every other neuron is ``--set neuron=NAME``."""
    import yaml

    path = CONFIGS / dataset / "reference.yaml"
    assert path.is_file(), f"missing {path}"
    raw = yaml.safe_load(path.read_text())
    missing = [k for k in REQUIRED if k not in raw]
    assert not missing, f"{path} lacks {missing}"
    assert raw["dataset"] == dataset and raw["neuron"] == "stc_lif"
    cfg = load_config(path, {"neuron": neuron})
    assert cfg.neuron == neuron
    # the reference hyper-parameters (hidden 256x3, kernel 5, batch 16, Adam lr 1e-3, cosine with 10
    # warm-up epochs from 1e-5, min lr 1e-5; patch 2/2/1/4; gradient_detach off for the moving digits)
    assert cfg.hidden_channels == [256, 256, 256]
    assert cfg.kernel_size == 5 and cfg.batch_size == 16
    assert cfg.lr == pytest.approx(1e-3) and cfg.min_lr == pytest.approx(1e-5)
    assert cfg.warmup_epochs == 10 and cfg.warmup_lr == pytest.approx(1e-5)
    assert cfg.patch_size == {"mmnist": 2, "mfmnist": 2, "taxibj": 1, "kth": 4}[dataset]
    assert cfg.gradient_detach is (dataset in ("taxibj", "kth"))
    if dataset == "mmnist":
        assert cfg.epochs == 500


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("neuron", ["lif", "convlstm"])
def test_an_old_per_neuron_config_path_names_the_reference_file(dataset, neuron, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / dataset).mkdir(parents=True)
    (tmp_path / "configs" / dataset / "reference.yaml").write_text((CONFIGS / dataset / "reference.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        load_config(f"configs/{dataset}/{neuron}.yaml")
    assert str(err.value) == (f"config file 'configs/{dataset}/{neuron}.yaml' not found: the per-neuron configs "
                              f"were replaced by one per dataset; use --config configs/{dataset}/reference.yaml "
                              f"--set neuron={neuron}")


@pytest.mark.parametrize("dataset", DATASETS)
def test_tiny_config_per_dataset(dataset):
    """A ``tiny.yaml`` per dataset (trains on 2 CPU cores in minutes)."""
    path = CONFIGS / dataset / "tiny.yaml"
    assert path.is_file(), f"missing {path}"
    cfg = load_config(path)
    assert cfg.dataset == dataset
    assert max(cfg.hidden_channels) <= 64


# ----------------------------------------------------------------------------------------------- $STCSNN_SET

def test_stcsnn_set_adds_overrides_the_command_line_wins_and_says_so(capsys):
    got = parse_overrides(["lr=0.1"], environ={"STCSNN_SET": "epochs=1; lr=0.5;;data_options.num_samples=8"})
    assert got == {"epochs": "1", "lr": "0.1", "data_options.num_samples": "8"}
    assert capsys.readouterr().err.strip() == (
        "note: $STCSNN_SET adds --set epochs=1; lr=0.5; data_options.num_samples=8")
    assert parse_overrides(["lr=0.1"], environ={}) == {"lr": "0.1"} and capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match=r"^\$STCSNN_SET 'epochs': expected KEY=VALUE"):
        parse_overrides([], environ={"STCSNN_SET": "epochs"})


def test_stcsnn_set_reaches_a_real_command(tmp_path, monkeypatch, capsys):
    from stcsnn.cli import main

    monkeypatch.setenv("STCSNN_SET", "epochs=1;steps_per_epoch=1;data_options.num_samples=4;"
                                      "data_options.val_samples=2;data_options.test_samples=2;batch_size=2")
    out = tmp_path / "run"
    assert main(["--threads", "1", "train", "--config", str(CONFIGS / "quickstart.yaml"), "--out", str(out),
                 "--quiet"]) == 0
    cfg = load_config(out / "config.yaml")
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.data_options["num_samples"]) == (1, 1, 2, 4)
    assert "note: $STCSNN_SET adds --set epochs=1" in capsys.readouterr().err
