"""The stage protocol: a stage has a ``name``, a frozen config dataclass and one ``run`` method.

A stage's config round-trips to a plain dict (``config_dict``), and its ``config_hash`` keys the
cache: an array made with another config is never taken for this one.  This module holds no
stage logic; see ``stages/decode.py``, ``stages/spectrogram.py`` and friends.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar

STAGES: dict[str, type["Stage"]] = {}


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short sha256 of ``obj`` serialised as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def register(cls: type["Stage"]) -> type["Stage"]:
    """Class decorator: make a stage available by its ``name``."""
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    return cls


class Stage:
    """Base class.  Subclasses set ``name``, ``Config`` (a frozen dataclass) and ``outputs``."""

    name: ClassVar[str]
    Config: ClassVar[type]
    outputs: ClassVar[tuple[str, ...]]

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict:
        return {"type": self.name, **dataclasses.asdict(self.config)}

    @property
    def config_hash(self) -> str:
        return stable_hash(self.config_dict())

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}({self.config})"
