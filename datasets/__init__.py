"""Data-set adapters: each turns an official annotation format into a ``Dataset`` of
``VideoRecord``s and registers itself in ``ADAPTERS`` under its ``--dataset`` name.

Adding a data set: write ``datasets/<name>.py`` with an ``@register("<name>")`` loader, and add
its one line to ``base.ADAPTER_MODULES`` (``--dataset`` choices are read from there, so the
CLI and ``get_adapter`` import it only when it is used).
"""
import importlib as _importlib

from .base import (ADAPTER_MODULES, ADAPTERS, AnnotationError, Dataset, VideoRecord,  # noqa: F401
                   get_adapter, load_dataset)

for _module in ADAPTER_MODULES.values():            # registration (each module registers itself)
    _importlib.import_module(f"{__name__}.{_module}")
