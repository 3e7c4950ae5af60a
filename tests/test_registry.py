"""Contract tests over the registries: every plugin gets them for free."""

import dataclasses

import pytest
import torch

from bench.interfaces import Method, ModularEncoder, Task
from bench.registry import METHODS, TASKS, Registry, UnknownNameError
from bench.spec import RunSpec, resolve


def test_unknown_name_lists_and_suggests():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("gmi")
    text = str(err.value)
    assert "Did you mean 'gim'" in text and "random_init" in text


def test_double_registration_fails():
    reg: Registry = Registry("thing")
    reg.register("a")(type("A", (), {}))
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(type("B", (), {}))


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method) and cls.name == name and cls.description
    assert dataclasses.is_dataclass(cls.Config)
    cls.Config()  # every field has a default


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract_encoder_shapes(name):
    cls = TASKS.get(name)
    assert issubclass(cls, Task) and cls.name == name and cls.description and cls.label_sets
    resolved = resolve(RunSpec(method="random_init", task=name, preset="smoke"))
    task = cls(resolved.task, None, 0)
    encoder = task.build_encoder()
    assert isinstance(encoder, ModularEncoder) and len(encoder.blocks) >= 1
    with torch.no_grad():
        outs = encoder.forward_modules(task.example_input(2), detach=True)
    assert len(outs) == len(encoder.blocks)
    for out in outs:
        assert out.rep.shape[0] == 2 and out.rep.dim() in (3, 4)
        assert out.target.shape[0] == 2 and torch.isfinite(out.rep).all()
