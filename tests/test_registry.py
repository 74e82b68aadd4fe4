"""The shared `get(identifier)` convention (`tfp_gradest._util.registry`)."""

import pytest

from tfp_gradest._util.registry import Configurable, Registry


class Thing(Configurable):
    def __init__(self, size=1, label="a"):
        self._size = size
        self._label = label

    @property
    def size(self):
        return self._size

    @property
    def label(self):
        return self._label


def make_registry():
    registry = Registry("thing", Thing, "thing")

    @registry.register("small_thing")
    class SmallThing(Thing):
        pass

    @registry.register("Big-Thing")
    class BigThing(Thing):
        def __init__(self, size=10):
            super().__init__(size=size)

    return registry, SmallThing, BigThing


def test_get_accepts_a_name_a_class_an_instance_and_a_config():
    registry, small, big = make_registry()
    assert type(registry.get("small_thing")) is small
    assert type(registry.get(" BIG_thing ")) is big
    assert registry.get(big).size == 10
    instance = big(size=3)
    assert registry.get(instance) is instance
    assert registry.get({"class_name": "BigThing", "config": {"size": 4}}) == big(size=4)
    assert registry.get({"class_name": "big_thing", "config": {"size": 4}}) == big(size=4)
    # Keras's own format carries more keys; they are ignored.
    keras_style = {"module": "x", "class_name": "SmallThing", "config": {}, "registered_name": None}
    assert registry.get(keras_style) == small()


def test_serialize_round_trips_and_names_are_set():
    registry, small, big = make_registry()
    assert registry.names() == ("small_thing", "big_thing")
    assert big.name == "big_thing"
    for instance in (small(size=2, label="b"), big(size=7)):
        config = registry.serialize(instance)
        assert config["class_name"] == type(instance).__name__
        assert registry.get(config) == instance
    assert registry.serialize("small_thing") == {
        "class_name": "SmallThing",
        "config": {"size": 1, "label": "a"},
    }


def test_repr_shows_non_defaults_and_equality_is_by_config():
    _, small, big = make_registry()
    assert repr(big()) == "BigThing()"
    assert repr(big(size=3)) == "BigThing(size=3)"
    assert small(size=2) == small(size=2) != small(size=3)
    assert small() != big(size=1)
    assert len({small(size=2), small(size=2)}) == 1


def test_bad_identifiers_name_the_argument():
    registry, _, _ = make_registry()
    with pytest.raises(ValueError, match=r"Unknown thing 'nope'.*small_thing, big_thing"):
        registry.get("nope")
    with pytest.raises(ValueError, match="Received: thing='Nope'"):
        registry.get({"class_name": "Nope", "config": {}})
    with pytest.raises(TypeError, match=r"options it does not take: \['colour'\].*Received"):
        registry.get({"class_name": "BigThing", "config": {"colour": "red"}})
    with pytest.raises(TypeError, match=r"`thing` must be .*Received: thing=3"):
        registry.get(3)
    with pytest.raises(TypeError, match="Received: thing=<class 'int'>"):
        registry.get(int)


def test_registration_is_checked():
    registry, small, _ = make_registry()
    with pytest.raises(ValueError, match="already registered as 'small_thing'"):
        registry.register("Small-Thing")(type("Other", (Thing,), {}))
    with pytest.raises(TypeError, match="Only subclasses of Thing"):
        registry.register("int")(int)


def test_a_missing_attribute_is_named():
    class NoAttribute(Configurable):
        def __init__(self, hidden=1):
            self._hidden = hidden

    with pytest.raises(NotImplementedError, match="takes `hidden` but has no attribute"):
        NoAttribute().get_config()
