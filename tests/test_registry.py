import pytest

from agentrl.registry import Registry, UnknownNameError


def test_register_get_and_list():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.get("a") == 1 and reg.get("b") is b
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2


def test_duplicate_name_raises():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", 2)


def test_unknown_name_lists_valid_ones():
    reg: Registry[int] = Registry("policy loss")
    reg.register("grpo", 1)
    reg.register("dapo", 2)
    with pytest.raises(UnknownNameError, match=r"unknown policy loss 'x'; valid: dapo, grpo"):
        reg.get("x")
    with pytest.raises(KeyError):  # also a KeyError for dict-like callers
        reg.get("x")
