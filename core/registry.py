"""A registry: name -> the class (or function) that implements it, filled by the decorators of
each kind of piece (stages, store backends, data-set adapters), so that adding a piece is its
own module plus one registration line."""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Registry(dict):
    """A dict of name -> piece that refuses a second, different piece under a name taken."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, name: str, piece: T) -> T:
        if self.get(name, piece) is not piece:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self[name] = piece
        return piece
