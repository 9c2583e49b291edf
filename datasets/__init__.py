"""Data-set adapters: each turns an official annotation format into a ``Dataset`` of
``VideoRecord``s and registers itself in ``ADAPTERS`` under its ``--dataset`` name."""
from .base import (ADAPTER_MODULES, ADAPTERS, AnnotationError, Dataset, VideoRecord,  # noqa: F401
                   get_adapter, load_dataset)
from . import activitynet, kinetics_sounds, mini_sports1m, synthetic, ucf101  # noqa: F401
