"""Data-set adapters: each turns an official annotation format into a ``Dataset`` of
``VideoRecord``s and registers itself in ``ADAPTERS`` under its ``--dataset`` name."""
from .base import ADAPTERS, AnnotationError, Dataset, VideoRecord  # noqa: F401
from . import activitynet, synthetic  # noqa: F401  (registration)
