"""The public plugin API as text, one line per name, method, field and signature: what the
stability promise in docs/api.md covers. ``python tests/api_surface.py`` prints it; ``tests/api_surface-N.txt`` holds API version N's."""
from __future__ import annotations

import dataclasses
import enum
import inspect
import re

MODULES = {
    "kpipe.api": None,                       # every name in __all__
    "kpipe.testing": None,
    "kpipe.transforms.testing": ["FakeMessage"],
}


def _sig(obj) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # a default that is a function: no address


def _members(name: str, cls: type) -> list[str]:
    out = [f"class {name}({', '.join(b.__name__ for b in cls.__bases__)})"]
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if fields:
        out += [f"  field {f.name}: {f.type}" for f in dataclasses.fields(cls)]
    for attr, value in sorted(vars(cls).items()):
        if (attr.startswith("_") and attr != "__init__") or attr in fields:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            out.append(f"  {type(value).__name__} {attr}{_sig(value.__func__)}")
        elif inspect.isfunction(value):
            kind = "abstract " if getattr(value, "__isabstractmethod__", False) else ""
            out.append(f"  {kind}def {attr}{_sig(value)}")
        elif isinstance(value, property):
            out.append(f"  property {attr}")
        elif isinstance(value, (int, str, bool, float)) and not isinstance(value, enum.Enum):
            out.append(f"  {attr} = {value!r}")
    return out


def surface() -> list[str]:
    import importlib

    lines = []
    for module_name, names in MODULES.items():
        module = importlib.import_module(module_name)
        for name in names or module.__all__:
            obj = getattr(module, name)
            prefix = f"{module_name}."
            if inspect.isclass(obj) and obj.__module__ == "builtins":  # an alias: TopicPartition = tuple
                lines.append(f"{prefix}{name} = {obj.__name__}")
            elif inspect.isclass(obj):
                lines += [prefix + line if i == 0 else f"{prefix}{name}.{line.strip()}"
                          for i, line in enumerate(_members(name, obj))]
            elif callable(obj):
                lines.append(f"{prefix}def {name}{_sig(obj)}")
            else:
                lines.append(f"{prefix}{name} = {obj!r}")
    return lines


if __name__ == "__main__":
    print("\n".join(surface()))
