"""One `get(identifier)` convention for every registry of the package.

`tge.estimators.get`, `tge.layers.estimators.get` and `tge.problems.get` all
accept what `keras.initializers.get` accepts:

* a registered name (`"iwae_dreg"`; case and `-` vs `_` do not matter),
* a registered class (constructed with its defaults),
* an instance (returned unchanged),
* a config dict `{"class_name": ..., "config": {...}}`, as `serialize` writes it
  (and as Keras's `serialize_keras_object` writes it: extra keys such as
  `"module"` are ignored), where `class_name` is the class's name or its
  registered name.

Registration is the class's own decorator (`@registry.register("name")`), so the
registry is filled by the modules that define the classes: no map is kept by hand.
Objects are `Configurable`: their options are their constructor arguments, each
readable as a public attribute of the same name, so `get_config`, `from_config`,
`repr` and equality come from one place.
"""

import inspect

__all__ = ["Configurable", "Registry", "canonical_name"]


class Configurable:
    """Mixin for small immutable objects defined by their constructor arguments.

    The convention: every argument of `__init__` is readable as a public
    attribute (usually a property) of the same name. Then

    * `get_config()` is `{argument: getattr(self, argument)}` (JSON-friendly when
      the arguments are),
    * `from_config(config)` is `cls(**config)`,
    * `repr` shows the arguments that differ from their defaults, and
    * two objects are equal when they have the same class and config.
    """

    @classmethod
    def _init_parameters(cls):
        signature = inspect.signature(cls.__init__)
        return [
            parameter
            for parameter in list(signature.parameters.values())[1:]
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]

    def get_config(self):
        """The constructor arguments that rebuild this object: `type(self)(**config)`."""
        config = {}
        for parameter in self._init_parameters():
            if not hasattr(self, parameter.name):
                raise NotImplementedError(
                    f"{type(self).__name__} takes `{parameter.name}` but has no attribute of "
                    "that name, so its config cannot be written; add a property "
                    f"`{parameter.name}` or override `get_config`."
                )
            config[parameter.name] = getattr(self, parameter.name)
        return config

    @classmethod
    def from_config(cls, config):
        """Builds an object from `get_config()`'s output."""
        return cls(**config)

    def __repr__(self):
        defaults = {p.name: p.default for p in self._init_parameters()}
        shown = {
            name: value
            for name, value in self.get_config().items()
            if defaults.get(name, inspect.Parameter.empty) is inspect.Parameter.empty
            or not _same(value, defaults[name])
        }
        arguments = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), repr(sorted(self.get_config().items()))))


def _same(value, default):
    try:
        return bool(value == default) and type(value) is type(default)
    except (TypeError, ValueError):  # e.g. arrays
        return False


def canonical_name(name):
    """The registry key of a name: case and surrounding spaces ignored, `-` read as `_`."""
    return name.strip().lower().replace("-", "_")


class Registry:
    """Named classes of one kind, and the `get`/`serialize` pair for them.

    Args:
      kind: Python `str`, what the objects are, for messages
        (e.g. `"gradient estimator"`).
      base: the base class every registered class derives from.
      argument: Python `str`, the argument name users pass identifiers as
        (e.g. `"gradient_estimator"`), for messages.
    """

    def __init__(self, kind, base, argument):
        self.kind = kind
        self.base = base
        self.argument = argument
        self._classes = {}

    def register(self, name):
        """Class decorator: registers the class under `name` and sets `cls.name = name`."""

        def decorator(cls):
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(
                    f"Only subclasses of {self.base.__name__} can be registered as a "
                    f"{self.kind}. Received: {cls!r}"
                )
            key = canonical_name(name)
            if key in self._classes:
                raise ValueError(
                    f"A {self.kind} is already registered as {key!r} "
                    f"({self._classes[key].__name__})."
                )
            cls.name = key
            self._classes[key] = cls
            return cls

        return decorator

    def names(self, where=None):
        """The registered names, in registration order; with `where`, only the names whose
        class satisfies `where(cls)`."""
        return tuple(name for name, cls in self._classes.items() if where is None or where(cls))

    def classes(self):
        """The registered classes, in registration order."""
        return tuple(self._classes.values())

    def get_class(self, name):
        """The class registered under `name` (or whose class name is `name`)."""
        if isinstance(name, str):
            key = canonical_name(name)
            if key in self._classes:
                return self._classes[key]
            for cls in self._classes.values():
                if cls.__name__ == name.strip():
                    return cls
        raise ValueError(
            f"Unknown {self.kind} {name!r}. Valid names: {', '.join(self.names())}. "
            f"Received: {self.argument}={name!r}"
        )

    def get(self, identifier):
        """Returns an instance from a name, a class, an instance or a config dict.

        Raises:
          ValueError: for an unknown name or class name.
          TypeError: for anything else, naming the argument.
        """
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, type) and issubclass(identifier, self.base):
            return identifier()
        if isinstance(identifier, str):
            return self.get_class(identifier)()
        if isinstance(identifier, dict) and "class_name" in identifier:
            cls = self.get_class(identifier["class_name"])
            config = dict(identifier.get("config") or {})
            parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
            known = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
            takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
            unknown = sorted(set(config) - known)
            if unknown and not takes_any:
                raise TypeError(
                    f"The config of {cls.__name__} has options it does not take: {unknown} "
                    f"(it takes {sorted(known)}). Received: {self.argument}={identifier!r}"
                )
            return cls.from_config(config)
        raise TypeError(
            f"`{self.argument}` must be a {self.kind} name (one of {', '.join(self.names())}), "
            f"a {self.base.__name__} class or instance, or a config dict with 'class_name' "
            f"and 'config'. Received: {self.argument}={identifier!r}"
        )

    def serialize(self, instance):
        """`{"class_name": ..., "config": ...}`, which `get` turns back into an equal object."""
        instance = self.get(instance)
        return {"class_name": type(instance).__name__, "config": instance.get_config()}
