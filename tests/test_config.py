from dataclasses import dataclass
from typing import Literal

import pytest

from bench import config as cfg
from bench.spec import RunSpec, resolve


@dataclass(frozen=True)
class Toy:
    lr: float = 1e-3
    steps: int = 2
    mode: Literal["a", "b"] = "a"
    modules: tuple[int, ...] = ()
    flag: bool = False
    name: str | None = None


def test_overrides_parse_numbers_lists_and_nesting():
    out = cfg.parse_overrides(["method.lr=1e-3", "method.train_modules=[0]", "train.epochs=3", "eval.all_modules=true"])
    assert out == {"method": {"lr": 0.001, "train_modules": [0]}, "train": {"epochs": 3}, "eval": {"all_modules": True}}


def test_a_choice_spelled_like_a_yaml_boolean_stays_a_choice():
    """``--set train.amp=off``: YAML 1.1 reads ``off`` as False; the Literal field takes back the word."""
    values = cfg.parse_overrides(["train.amp=off"])["train"]
    assert values == {"amp": False}
    assert resolve(RunSpec(method="gim", task="synthetic_textures", overrides={"train": values})).train.amp == "off"
    with pytest.raises(cfg.ConfigError, match="must be one of"):
        cfg.build(Toy, {"mode": False}, "method")  # no choice is spelled like a boolean


@pytest.mark.parametrize("bad", ["lr=1", "method.lr", "=3"])
def test_malformed_override_says_how(bad):
    with pytest.raises(cfg.ConfigError, match="SECTION.KEY=VALUE"):
        cfg.parse_overrides([bad])


def test_build_coerces_and_validates():
    toy = cfg.build(Toy, {"lr": 1, "modules": [0, 2], "mode": "b", "name": None}, "method")
    assert toy == Toy(lr=1.0, modules=(0, 2), mode="b")
    assert isinstance(toy.lr, float)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lrr": 1.0}, r"unknown key method\.lrr"),
        ({"steps": 1.5}, r"method\.steps must be an integer"),
        ({"mode": "c"}, r"method\.mode must be one of"),
        ({"modules": 3}, r"method\.modules must be a list"),
        ({"flag": "yes"}, r"method\.flag must be true or false"),
    ],
)
def test_build_errors_name_the_key(values, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.build(Toy, values, "method")


def test_frozen():
    with pytest.raises(Exception):
        Toy().lr = 3  # type: ignore[misc]


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method:\n  lr: [1, 2\n")
    with pytest.raises(cfg.ConfigError, match="not valid YAML at line"):
        cfg.load_yaml(path)


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(cfg.ConfigError, match="mapping"):
        cfg.load_yaml(path)


def test_resolution_order_and_run_id():
    base = resolve(RunSpec(preset="smoke"))
    assert base.train.epochs == 1  # the task's preset
    assert resolve(RunSpec(preset="paper")).method.lr == 1.5e-4  # the method's preset for vision
    over = resolve(RunSpec(preset="smoke", overrides={"method": {"lr": 5e-4}}))
    assert over.method.lr == 5e-4 and over.run_id != base.run_id
    assert resolve(RunSpec(preset="smoke")).run_id == base.run_id  # deterministic
    assert resolve(RunSpec(preset="smoke", experiment="other")).run_id == base.run_id  # labels are not config


def test_unknown_section_and_preset():
    with pytest.raises(cfg.ConfigError, match="unknown config section 'trian'"):
        resolve(RunSpec(overrides={"trian": {"epochs": 1}}))
    with pytest.raises(cfg.ConfigError, match="Did you mean 'smoke'"):
        resolve(RunSpec(preset="smok"))
