"""``quicker_init`` gives a frozen slotted dataclass the ``__init__`` dataclass made, quicker:
the same parameters, defaults and factories, and nothing else of the class changes; a class
it cannot do that for keeps its own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from propylon.ir import model
from propylon.ir.frozen import quicker_init
from propylon.translate.delegation import Draft


def made(quick: bool) -> type:
    @dataclass(frozen=True, slots=True)
    class Thing:
        a: int
        b: str = "b"
        c: list[int] = field(default_factory=list, hash=False)
        d: tuple[int, ...] = ()

    return quicker_init(Thing) if quick else Thing


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1,), {}), ((1, "x"), {}), ((1,), {"c": [2]}), ((), {"a": 1, "d": (3,)}),
    ((1, "x", [2], (3,)), {}),
])
def test_the_same_objects_as_dataclass_makes(args: tuple[object, ...],
                                             kwargs: dict[str, object]) -> None:
    plain, quick = made(False), made(True)
    assert quick.__init__ is not plain.__init__
    one, other = plain(*args, **kwargs), quick(*args, **kwargs)
    assert dataclasses.astuple(one) == dataclasses.astuple(other)
    assert repr(one).split("(", 1)[1] == repr(other).split("(", 1)[1]
    assert quick(*args, **kwargs) == other and hash(quick(1)) == hash(quick(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        other.a = 2


def test_a_factory_makes_a_new_value_each_time() -> None:
    quick = made(True)
    assert quick(1).c is not quick(1).c


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1, "x", [], (), 5), {}),
                                              ((1,), {"e": 1}), ((1,), {"a": 2})])
def test_wrong_arguments_are_refused_as_before(args: tuple[object, ...],
                                               kwargs: dict[str, object]) -> None:
    for quick in (False, True):
        with pytest.raises(TypeError):
            made(quick)(*args, **kwargs)


def test_classes_it_cannot_do_keep_their_own_init() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordsOnly:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (NoSlots, PostInit, KeywordsOnly, NotFrozen):
        init = cls.__init__
        assert quicker_init(cls).__init__ is init


def test_the_ir_and_the_drafts_have_it() -> None:
    assert model.RuleIR.__init__.__code__.co_filename == "<string>"
    assert Draft.__init__.__code__.co_filename == "<string>"
