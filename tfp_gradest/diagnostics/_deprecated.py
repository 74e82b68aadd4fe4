"""Old module paths of `tge.diagnostics` kept for one release, with a `DeprecationWarning`."""

import importlib
import warnings


def module_getattr(old_module, renamed):
    """A module `__getattr__` for `old_module` whose names moved: `renamed` maps each old name
    to `(new module, new name)`; using one warns, saying exactly what to write instead."""

    def __getattr__(name):
        if name not in renamed:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, new_name = renamed[name]
        warnings.warn(
            f"`{old_module}.{name}` is deprecated and will be removed in the next release; "
            f"write `{module}.{new_name}` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
