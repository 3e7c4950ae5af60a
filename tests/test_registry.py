"""Contract tests over the registries: every plugin gets them for free."""

import dataclasses

import pytest

from bench.interfaces import Method
from bench.registry import METHODS, Registry, UnknownNameError


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
    assert issubclass(cls, Method) and cls.name == name and cls.description and cls.modalities
    assert dataclasses.is_dataclass(cls.Config)
    defaults = cls.Config()  # every field has a default
    assert all(hasattr(defaults, key) for key in cls.variant_keys), "variant_keys must name Config fields"
