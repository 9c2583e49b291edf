"""Shared fixtures: tiny real media files written by the tests themselves (with a real tone).

The writers themselves are in ``helpers.py`` (import them from there in a test module).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_video  # noqa: F401  (tests/ is on sys.path: setup.cfg `pythonpath`)


@pytest.fixture
def make_video(tmp_path):
    """Factory: ``make_video("name.mp4", frames=..., ...)`` -> path of a written file."""
    def _make(name: str = "v.mp4", **kw) -> Path:
        return write_video(tmp_path / name, **kw)
    return _make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices: one torch thread is faster than two fighting for 2 busy cores."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
