"""``ModelStage``: the base of the stages that run a network (features, teacher).

What is here, shared by those stages:
- **One model per run.**  ``setup`` looks the model up in the ``models`` dict its owner passes
  (the run's, ``pipeline.process.Run``) keyed by (stage name, config hash, device) and loads it
  only on a miss, so every stage object of one run (copies, unpickled ones) shares one model;
  without one the stage loads its own.  ``release`` lets it go; nothing is kept at module
  level, so a run's end frees its models.  The config hash covers the weights' content,
  precision, device and ``compile``, not the batch size or the weights' path (they do not
  change the model).
- **Placement.**  ``for_device`` records in the config where the numbers are made: ``device``
  ("cpu" or "cuda") and ``precision`` ("fp32", or "bf16" by default on CUDA).  Both are hashed,
  so CPU and GPU numbers never share a cache key.  It touches no GPU.
- **Batched forward passes** (``run_batch``).  On CPU, each video goes through in fixed chunks of
  ``batch_size`` from its first row, so its numbers equal ``run`` on it alone, bitwise, whatever
  else is in the batch.  On CUDA, rows of all the videos are cut into full batches (the last one
  zero-padded to a power of two, so passes come in few shapes): uint8/float16 inputs are
  staged in pinned memory, copied on a side stream (batch k+1's copy overlaps batch k's
  compute), converted and normalised on the GPU, and the outputs come back in one copy per
  call.  GPU numbers are not bitwise those of the CPU (another key, see ``for_device``).

Not here: what a stage computes (``prepare``/``forward`` in ``stages/features.py`` and
``stages/teacher.py``) or its model (``models/``).
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Sequence

import numpy as np

from ..core.errors import ConfigError, L2LError
from .base import Stage

PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_KINDS = ("", "cpu", "cuda")


class PlacementError(L2LError, ValueError):
    """A model stage configured for one device kind asked to run on another."""


def device_kind(device: Any) -> str:
    """"cuda" for any CUDA device string ("cuda", "cuda:1"), else "cpu"; touches no GPU."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def check_placement_fields(config: Any) -> None:
    """Validate a model config's ``precision``/``device``/``batch_size`` (from ``__post_init__``)."""
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {config.precision!r}")
    if config.device not in DEVICE_KINDS:
        raise ConfigError(f"device must be 'cpu' or 'cuda' (set by for_device), not {config.device!r}")
    if config.batch_size < 0:
        raise ConfigError(f"batch_size must be >= 0 (0: the device's default), not {config.batch_size}")


class ModelStage(Stage):
    """Subclasses set ``batch_inputs`` (the inputs a forward pass takes, in order),
    ``cpu_batch``/``gpu_batch`` (rows per forward pass when ``batch_size`` is 0) and implement
    ``load_model``, ``check_inputs``, ``output_dims``, ``prepare`` and ``forward``.  Their config
    has ``precision``, ``device``, ``compile``, ``batch_size`` and ``dtype`` fields."""

    uses_gpu = True
    batchable = True
    batch_inputs: ClassVar[tuple[str, ...]] = ()
    cpu_batch: ClassVar[int] = 64
    gpu_batch: ClassVar[int] = 1024

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.model = None
        self.device = None

    def __getstate__(self):
        return {**self.__dict__, "model": None, "device": None}

    # ---- hooks --------------------------------------------------------------------------------
    def load_model(self, device: str):
        """Build the network on ``device``, in eval mode (called once per process and key)."""
        raise NotImplementedError

    def check_inputs(self, inputs: dict[str, Any]) -> int:
        """Raise ``ValueError`` on bad shapes/dtypes; return the number of rows."""
        raise NotImplementedError

    def output_dims(self) -> dict[str, int]:
        """Output name -> width D of its (N, D) array."""
        raise NotImplementedError

    def prepare(self, *tensors):
        """The batch tensors (as staged: uint8/float16, on the device) -> the model's inputs."""
        return tensors

    def forward(self, model, *args) -> dict[str, Any]:
        """The model's outputs: name -> (B, D) tensor."""
        raise NotImplementedError

    # ---- placement and the per-process model -----------------------------------------------
    def for_device(self, device: str) -> "ModelStage":
        kind = device_kind(device)
        c = self.config
        precision = c.precision if c.precision != "auto" else ("bf16" if kind == "cuda" else "fp32")
        if c.device == kind and c.precision == precision:
            return self
        new = copy.copy(self)
        new.config = copy.copy(c)            # not ``replace``: its ``__post_init__`` would
        object.__setattr__(new.config, "device", kind)          # re-read the weights to hash
        object.__setattr__(new.config, "precision", precision)  # them; the content hashes
        check_placement_fields(new.config)                      # taken when the config was
        new.model, new.device = None, None                      # made stay
        return new

    def placed(self, device: str) -> "ModelStage":
        """This stage placed on ``device``: itself when ``for_device`` already placed it there;
        a ``PlacementError`` when it was placed on another kind of device."""
        kind = device_kind(device)
        if self.config.device and self.config.device != kind:
            raise PlacementError(f"stage {self.name}: configured for {self.config.device} "
                                 f"(its cache key says so) but asked to run on {device}")
        return self if self.config.device else self.for_device(device)

    def setup(self, device: str = "cpu", models: dict | None = None) -> None:
        """Point ``self.model`` at the model for this config and device: the one in ``models``
        (the owner's: stage name, config hash, device -> model), loaded into it on a miss; or,
        without ``models``, this object's own, loaded on its first call."""
        device = str(device)
        if models is None and self.model is not None and self.device == device:
            return
        placed = self.placed(device)
        key = (self.name, placed.config_hash, device)
        model = None if models is None else models.get(key)
        if model is None:
            model = placed.load_model(device)
            if placed.config.compile:
                import torch
                model = torch.compile(model, dynamic=False)
            if models is not None:
                models[key] = model
        self.model, self.device = model, device

    def release(self) -> None:
        """Let the model go (the run ended)."""
        self.model, self.device = None, None

    def batch_size(self, device: str) -> int:
        if self.config.batch_size:
            return self.config.batch_size
        return self.gpu_batch if device_kind(device) == "cuda" else self.cpu_batch

    # ---- running ------------------------------------------------------------------------------
    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        return self.run_batch([inputs], device=device)[0]

    def run_batch(self, inputs: Sequence[dict[str, Any]], *, device: str = "cpu") -> list[dict[str, Any]]:
        """Outputs (N_i, D) in ``config.dtype`` for each video i (see the module docstring for
        how forward passes are cut on CPU and on CUDA)."""
        placed = self.placed(device)
        if self.model is None or self.device != str(device):
            self.setup(device)
        placed.model, placed.device = self.model, self.device
        videos = [{k: np.asarray(x[k]) for k in self.batch_inputs} for x in inputs]
        sizes = [self.check_inputs(v) for v in videos]
        return placed._forward_all(videos, sizes, str(device))

    def _forward_all(self, videos, sizes, device):
        import torch
        dims, dtype = self.output_dims(), self.config.dtype
        outs = [{k: np.empty((n, d), dtype) for k, d in dims.items()} for n in sizes]
        b = self.batch_size(device)
        cuda = device_kind(device) == "cuda"
        amp = self.config.precision == "bf16"
        bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bench or cuda   # autotune: shapes are fixed; restored
        try:
            with torch.inference_mode(), torch.autocast(device_kind(device), torch.bfloat16,
                                                        enabled=amp):
                flat = self._forward(videos, sizes, outs, dims, dtype, device, b, cuda)
        finally:
            torch.backends.cudnn.benchmark = bench
        if flat is None:
            return outs
        start = 0
        for n, out in zip(sizes, outs):
            for k in dims:
                out[k][...] = flat[k][start:start + n]
            start += n
        return outs

    def _forward(self, videos, sizes, outs, dims, dtype, device, b, cuda):
        """CPU: fill ``outs`` video by video, in fixed chunks (returns None); CUDA: all rows
        at once (``forward_across``)."""
        import torch
        if cuda:
            return self.forward_across(videos, sizes, device, b)
        for v, n, out in zip(videos, sizes, outs):
            for s in range(0, n, b):
                # float16 -> float32 by numpy (exact, and ~10x faster than torch's CPU cast)
                x = [torch.from_numpy(np.ascontiguousarray(
                    v[k][s:s + b], np.float32 if v[k].dtype == np.float16 else None))
                    for k in self.batch_inputs]
                got = self.forward(self.model, *self.prepare(*x))
                for k in dims:
                    out[k][s:s + b] = got[k].float().numpy().astype(dtype)
        return None

    def forward_across(self, videos, sizes, device: str, b: int) -> dict[str, np.ndarray]:
        """All rows of all ``videos``, in order, cut into forward passes of ``b`` rows (the last
        zero-padded to the next power of two, at most ``b``: few shapes for cuDNN's autotuning
        and ``torch.compile``, little waste on a short tail): name -> (sum(sizes), D) array in
        ``config.dtype``.  On CUDA with pinned staging and a copy stream; elsewhere the same
        arithmetic, plainly (what the CPU tests check).  Call inside inference mode/autocast."""
        import torch
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        total, dims = sum(sizes), self.output_dims()
        odtype = getattr(torch, self.config.dtype)
        result = {k: torch.empty((total, d), dtype=odtype, device=dev) for k, d in dims.items()}
        if total == 0:
            return {k: v.cpu().numpy() for k, v in result.items()}
        batches, cur, fill = [], [], 0              # each: [(video, start, stop, offset)], rows
        for i, n in enumerate(sizes):
            s = 0
            while s < n:
                take = min(b - fill, n - s)
                cur.append((i, s, s + take, fill))
                fill, s = fill + take, s + take
                if fill == b:
                    batches.append((cur, fill))
                    cur, fill = [], 0
        if cur:
            batches.append((cur, fill))
        ref = next(v for v, n in zip(videos, sizes) if n)
        slots = 2 if cuda else 1
        host = [[torch.empty((b, *ref[k].shape[1:]), dtype=torch.from_numpy(ref[k][:0]).dtype,
                             pin_memory=cuda) for k in self.batch_inputs] for _ in range(slots)]
        on_dev = [[t.to(dev) for t in slot] for slot in host] if cuda else host
        copier = torch.cuda.Stream(dev) if cuda else None
        compute = torch.cuda.current_stream(dev) if cuda else None
        copied, computed = [None] * slots, [None] * slots

        def stage(j: int) -> None:            # fill slot j % slots with batch j, start its copy
            slot = j % slots
            if cuda and copied[slot] is not None:
                copied[slot].synchronize()      # the pinned buffer's last copy has finished
            pieces, rows = batches[j]
            for t, k in zip(host[slot], self.batch_inputs):
                a = t.numpy()
                for i, s, e, o in pieces:
                    a[o:o + e - s] = videos[i][k][s:e]
                a[rows:padded(rows)] = 0
            if cuda:
                with torch.cuda.stream(copier):
                    if computed[slot] is not None:   # the device buffer's last batch is done
                        copier.wait_event(computed[slot])
                    p = padded(rows)
                    for src, dst in zip(host[slot], on_dev[slot]):
                        dst[:p].copy_(src[:p], non_blocking=True)
                    copied[slot] = torch.cuda.Event()
                    copied[slot].record(copier)

        def padded(rows: int) -> int:
            return min(b, 1 << max(0, rows - 1).bit_length())

        stage(0)
        for j, (_, rows) in enumerate(batches):
            slot = j % slots
            if cuda:
                compute.wait_event(copied[slot])
            got = self.forward(self.model, *self.prepare(*(t[:padded(rows)] for t in on_dev[slot])))
            for k in dims:
                result[k][j * b:j * b + rows] = got[k][:rows].float().to(odtype)
            if cuda:
                computed[slot] = torch.cuda.Event()
                computed[slot].record(compute)
            if j + 1 < len(batches):
                stage(j + 1)                    # host fill + copy overlap batch j's compute
        return {k: v.cpu().numpy() for k, v in result.items()}
