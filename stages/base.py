"""The stage protocol: a stage has a ``name``, a frozen config dataclass and one ``run`` method.

A stage's config round-trips to a plain dict (``config_dict``), and its ``config_hash`` keys the
cache: an array made with another config is never taken for this one.  ``ModelStage`` (the base
of the stages that run a network) lives in ``stages/model.py``: its per-process model cache,
device placement and batched forward passes.  This module holds no stage logic; see
``stages/decode.py``, ``stages/spectrogram.py`` and friends.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

from ..core.hashing import stable_hash
from ..core.registry import Registry

STAGES: Registry = Registry("stage")


def register(cls: type["Stage"]) -> type["Stage"]:
    """Class decorator: make a stage available by its ``name``."""
    return STAGES.add(cls.name, cls)


class Stage:
    """Base class.  Subclasses set ``name``, ``Config`` (a frozen dataclass), ``inputs`` and
    ``outputs`` and implement ``run``.

    - ``inputs``: names of stored (or upstream, in-memory) arrays the stage reads; the special
      name ``"source"`` means the media file itself.
    - ``outputs``: names of the arrays it returns (and the store keeps, unless listed in
      ``transient``: handed to later stages in memory but not stored).
    - ``hash_exclude``: config fields that do not change the numbers (batch size, device,
      paths whose content is hashed separately) and so stay out of the cache key.
    - ``uses_gpu``: the stage runs a network and goes to the GPU when there is one; stages
      without it always run on the CPU, whatever ``--device`` says (their numbers must not
      depend on the machine).
    - ``cost_models``: per output, the models (keys of ``models.cost.flops_per_moment``) that
      one moment of it costs; what the evaluation's cost accounting reads.
    - ``batchable``: ``run_batch`` over many videos is cheaper than ``run`` on each (one forward
      pass spans videos); the runner then hands it all the videos of a task at once.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    transient: ClassVar[tuple[str, ...]] = ()
    hash_exclude: ClassVar[tuple[str, ...]] = ()
    uses_gpu: ClassVar[bool] = False
    batchable: ClassVar[bool] = False
    cost_models: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict:
        """The config as a plain dict with its type name (what the store records)."""
        return {"type": self.name, **dataclasses.asdict(self.config)}

    def setup(self, device: str = "cpu") -> None:
        """Load heavy state once per run (optional; the run, ``pipeline.process.Run``, calls
        it once per stage object)."""

    def release(self) -> None:
        """Let what ``setup`` loaded go (the run ended; optional)."""

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        """Compute this stage's outputs for one video from ``inputs`` (and the media file
        ``source`` when ``"source"`` is an input)."""
        raise NotImplementedError

    def for_device(self, device: str) -> "Stage":
        """This stage as it will run on ``device`` ("cpu" or "cuda..."): a copy whose config
        records whatever makes its numbers device-dependent (precision, say), so that the cache
        keys differ where the numbers may.  The runner calls it once, after resolving
        ``--device``, with "cpu" for every stage that does not ``uses_gpu``."""
        return self

    def upstream_options(self) -> dict[str, dict[str, Any]]:
        """Options this stage needs set on earlier stages: stage name -> config field -> value
        (the teacher asks decode for its clips).  ``plan_stages`` applies them before checking
        that every input is produced."""
        return {}

    def run_batch(self, inputs: Sequence[dict[str, Any]], *, device: str = "cpu") -> list[dict[str, Any]]:
        """``run`` over many videos (``inputs[i]`` is video i's inputs; no ``source``): the
        outputs in the same order.  Batchable stages override it to cut one forward pass across
        videos; the numbers must equal ``run`` on each video."""
        return [self.run(x, device=device) for x in inputs]

    def key(self, upstream: dict[str, str]) -> str:
        """The cache key of this stage's outputs given its inputs' keys."""
        return stable_hash({"stage": self.name, "config": self.config_hash, "upstream": upstream})

    @property
    def config_hash(self) -> str:
        d = {k: v for k, v in self.config_dict().items() if k not in self.hash_exclude}
        return stable_hash(d)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}({self.config})"
