"""The lint rules, one module per family; importing this package registers them all (by discovery,
so a new family module needs no edit here)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
