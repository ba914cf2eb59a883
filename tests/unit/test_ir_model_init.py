"""The IR classes' ``__init__`` (``ir/model.py``, ``_quicker_init``) takes what the one
dataclasses makes takes and gives the same objects: positional and keyword arguments,
defaults, a fresh default from each factory, a required argument missing refused; the
objects stay frozen."""

from __future__ import annotations

import dataclasses

import pytest

from propylon.ir import model


def test_arguments_defaults_and_factories() -> None:
    a = model.ConsumerIR("team/app", "app")
    b = model.ConsumerIR(key="team/app", name="app")
    assert a == b and a.labels == {} and a.api_keys == ()
    assert a.labels is not b.labels  # each object its own factory value
    given = {"tier": "gold"}
    assert model.ConsumerIR("k", "n", given).labels is given
    match = model.MatchIR()
    assert match.path == model.PathMatchIR("prefix", "/")
    assert model.EndpointIR("127.0.0.1", 80).weight == 1
    with pytest.raises(TypeError):
        model.EndpointIR("127.0.0.1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        model.EndpointIR("127.0.0.1", 80, weight=2, other=1)  # type: ignore[call-arg]


def test_every_class_builds_what_its_fields_say_and_stays_frozen() -> None:
    for cls in [v for v in vars(model).values()
                if isinstance(v, type) and dataclasses.is_dataclass(v)]:
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
    endpoint = model.EndpointIR("127.0.0.1", 80, 3)
    assert dataclasses.astuple(endpoint) == ("127.0.0.1", 80, 3)
    assert dataclasses.replace(endpoint, port=81) == model.EndpointIR("127.0.0.1", 81, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoint.port = 81  # type: ignore[misc]
