"""The per-moment features of one store subset, in memory or streamed, and a skim model run
over them.

What is here: ``FeatureSet`` (a subset's videos and labels, and padded batches of their
features), ``memory_budget``/``choose_streaming`` (whether a subset is read whole or streamed)
and ``predict`` (a skim model over a FeatureSet: video probabilities and picks).  Training
(``training/skim.py``) and evaluation (``report.py``, ``visualize.py``) both read through it; it
imports neither of them.  What is not: the network (``models/skim.py``), metrics, baselines,
files.

Two modes, the same batches bit for bit:

- in memory: the subset's arrays read with one ``read_many`` into contiguous arrays; a batch is
  cut from them by indexing;
- streamed (``stream=True``): only the ids, lengths and labels are held; a batch reads its
  videos from the store (one ``read_many``, in stored order) when asked for.  ``batches`` reads
  ahead on a thread (``PREFETCH`` batches) while the caller computes on the current one.

Either way a batch is (one (B, L, D) float32 tensor per name, mask (B, L) bool), rows taken
from the stored float16/float32 rows by the same gather, so the two modes give identical
tensors.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from l2l.models.skim import SkimError, SkimNet

PREFETCH = 1                 # batches a streamed FeatureSet reads ahead of the one in use (one
                             # is enough when a batch reads faster than a step computes;
                             # each more holds a batch: 0.2 GB at 256 x 400 x 2 banks, float16)
DEFAULT_BUDGET_FRACTION = 0.25   # --memory-budget default: this share of the machine's RAM


def return_freed_memory() -> None:
    """Have glibc's malloc give freed blocks of 1 MiB and more back to the system at once
    (``mallopt``: a fixed mmap threshold and trim threshold, instead of thresholds that rise
    to 32 MiB as big blocks are freed, leaving freed memory in the heap).  For a run kept under
    ``--memory-budget``: about 0.2 GB less peak RSS in a streamed train-skim step at 256 x 400
    moments (train-skim calls it when it streams; evaluate does not: its many 1-32 MiB
    blocks would each be mapped and faulted in afresh).  Nothing where the C library has no
    ``mallopt`` (not glibc)."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 1 << 20)
    mallopt(M_TRIM_THRESHOLD, 1 << 20)


def machine_ram() -> int:
    """Bytes of physical memory (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def memory_budget(gigabytes: float | None) -> int:
    """Bytes the features of a run may hold in memory: ``gigabytes`` (GiB) or, when None, a
    quarter (``DEFAULT_BUDGET_FRACTION``) of the machine's RAM."""
    if gigabytes is None:
        return int(DEFAULT_BUDGET_FRACTION * (machine_ram() or 8 << 30))
    if gigabytes <= 0:
        raise SkimError(f"--memory-budget {gigabytes}: must be a positive number of gigabytes")
    return int(gigabytes * 2**30)


def _labels(metas, classes: Sequence[str]) -> list[list[int]]:
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for m in metas:
        unknown = [lab for lab in m.labels if lab not in index]
        if unknown:
            raise SkimError(f"video {m.id!r} has label(s) {unknown} outside the store's classes")
        out.append([index[lab] for lab in m.labels])
    return out


def _gather(arrays: dict, offsets: np.ndarray, names: Sequence[str], starts: np.ndarray,
            lengths: np.ndarray, device, dtype=torch.float32):
    """Banks (B, L, D) and mask (B, L): video b is rows offsets[b] + starts[b] + [0,
    lengths[b]) of ``arrays``; padding rows are zeros (the same whichever rows ``arrays``
    holds; ``SkimNet`` then uses the banks without a zero-padded copy).  ``dtype`` None: the
    stored dtype (a float16 batch is half the size while it waits in the read-ahead).  Each
    video's window is one slice copied into a zeroed buffer (an index gather plus a masked fill
    cost about 20 times that: 0.65 s a batch of 256 x 400 moments x 2 arrays on 2 cores)."""
    mask = _window_mask(lengths)
    L = mask.shape[1]
    first = (offsets + starts).tolist()
    n_rows = lengths.tolist()
    banks = []
    for n in names:
        src = arrays[n].numpy()
        out = np.zeros((len(n_rows), L, *src.shape[1:]), _np(dtype or arrays[n].dtype))
        for b, (f, k) in enumerate(zip(first, n_rows)):
            out[b, :k] = src[f:f + k]                 # (float16 -> float32: exact)
        banks.append(torch.from_numpy(out).to(device))
    return banks, torch.from_numpy(mask).to(device)


def _np(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _window_mask(lengths: np.ndarray) -> np.ndarray:
    """(B, longest) bool: True on each window's real rows."""
    longest = int(lengths.max()) if len(lengths) else 0
    return np.arange(longest)[None, :] < lengths[:, None]


class FeatureSet:
    """One subset's videos: ``ids``, ``lengths`` (moments), ``labels`` (class indices each),
    ``metas``, and their per-moment arrays.

    In memory (``store`` None): ``arrays[name]``: (M, D) float16/float32, all videos' moments
    back to back; video i is rows ``offsets[i]:offsets[i+1]``.  Streamed (``store`` given):
    ``arrays`` is empty and ``names`` says which arrays a batch may ask the store for."""

    def __init__(self, ids, offsets, arrays, labels, metas=(), *, store=None, names=()):
        self.ids = list(ids)
        self.offsets = np.asarray(offsets, np.int64)
        self.lengths = np.diff(self.offsets)
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.labels = [list(lab) for lab in labels]
        self.metas = list(metas)
        self.store = store
        self.names = list(names) if store is not None else list(self.arrays)

    @property
    def streamed(self) -> bool:
        return self.store is not None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_store(cls, store, names: Sequence[str], *, subset: str | None, classes: Sequence[str],
                   ids: Sequence[str] | None = None, extra: Sequence[str] = (),
                   stream: bool = False, labelled: bool = False) -> "FeatureSet":
        """The subset's (or ``ids``') videos; ``labelled``: only those with labels (chosen
        before anything is read); ``stream``: read batches on demand (see the module
        docstring) instead of the whole subset now."""
        from l2l.store import StoreError
        ids = list(store.ids(subset) if ids is None else ids)
        names = list(dict.fromkeys([*names, *extra]))
        hint = (f" (skimming needs the {', '.join(names)} features: run `l2l extract` with the "
                "student features first)")
        if labelled or stream:
            got = store.stored(ids)                 # one index query for every video
            metas = [got[v][0] if v in got else store.meta(v) for v in ids]
            if labelled:
                keep = [i for i, m in enumerate(metas) if m.labels]
                ids, metas = [ids[i] for i in keep], [metas[i] for i in keep]
        if stream:
            try:
                for v in ids[:1]:                  # fail now, not in the first batch
                    missing = [n for n in names if n not in store.records(v)]
                    if missing:
                        raise StoreError(f"{store.path}: video {v!r} has no array {missing[0]!r}")
            except StoreError as e:
                raise SkimError(f"{e.line()}{hint}") from None
            offsets = np.r_[0, np.cumsum([m.num_moments for m in metas])].astype(np.int64)
            return cls(ids, offsets, {}, _labels(metas, classes), metas, store=store, names=names)
        try:
            batch = store.read_many(names, ids)
        except StoreError as e:        # the hint only where arrays are missing (not damaged)
            stored = set(store.ids())
            lacking = sorted({n for v in ids if v in stored
                              for n in names if n not in store.records(v)})
            raise SkimError(f"{e.line()}{hint if lacking else ''}") from None
        return cls(batch.ids, batch.offsets, batch.arrays, _labels(batch.metas, classes), batch.metas)

    @staticmethod
    def nbytes(store, names: Sequence[str], ids: Sequence[str]) -> int:
        """Bytes that ``names`` of ``ids`` take in memory (from the index, nothing read)."""
        if not ids:
            return 0
        recs = store.records(ids[0])
        row = sum(int(np.prod(recs[n].shape[1:], dtype=np.int64)) * np.dtype(recs[n].dtype).itemsize
                  for n in names if n in recs)
        return row * sum(store.moments(ids).values())

    def labelled(self) -> "FeatureSet":
        keep = [i for i, lab in enumerate(self.labels) if lab]
        return self if len(keep) == len(self) else self.subset(keep)

    def subset(self, keep: Sequence[int]) -> "FeatureSet":
        keep = list(keep)
        offsets = np.r_[0, np.cumsum(self.lengths[keep])]
        metas = [self.metas[i] for i in keep] if self.metas else ()
        labels = [self.labels[i] for i in keep]
        ids = [self.ids[i] for i in keep]
        if self.streamed:
            return FeatureSet(ids, offsets, {}, labels, metas, store=self.store, names=self.names)
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) \
            if keep else np.zeros(0, np.int64)
        return FeatureSet(ids, offsets, {k: v.numpy()[rows] for k, v in self.arrays.items()},
                          labels, metas)

    def _read(self, videos: np.ndarray, names: Sequence[str]) -> tuple[dict, np.ndarray]:
        """Streamed: the arrays of ``videos`` (read in stored, i.e. id, order) and each
        video's first row in them."""
        from l2l.store import StoreError
        order = np.unique(videos)
        try:
            got = self.store.read_many(list(names), [self.ids[v] for v in order])
        except StoreError as e:
            raise SkimError(e.line()) from None
        where = np.searchsorted(order, videos)
        arrays = {n: torch.from_numpy(got.arrays[n]) for n in names}
        return arrays, got.offsets[:-1][where]

    def batch(self, videos: np.ndarray, names: Sequence[str], starts: np.ndarray | None = None,
              lengths: np.ndarray | None = None, device="cpu", dtype=torch.float32):
        """Banks (one (B, L, D) float32 tensor per name; ``dtype`` None: as stored) and mask
        (B, L) bool for ``videos``, each the window [start, start + length) of its moments
        (default: all of them); padding rows are zeros."""
        videos = np.asarray(videos)
        if lengths is None:
            lengths = self.lengths[videos]
        if starts is None:
            starts = np.zeros(len(videos), np.int64)
        if self.streamed:            # each window read into its padded row: no whole videos
            from l2l.store import StoreError
            try:
                got = self.store.read_windows(names, [self.ids[v] for v in videos], starts, lengths)
            except StoreError as e:
                raise SkimError(e.line()) from None
            mask = _window_mask(lengths)
            banks = [torch.from_numpy(got[n]) for n in names]
            return ([b.to(device=device, dtype=dtype or b.dtype) for b in banks],
                    torch.from_numpy(mask).to(device))
        return _gather(self.arrays, self.offsets[videos], names, starts, lengths, device, dtype)

    def moments(self, videos: np.ndarray, names: Sequence[str], device="cpu"):
        """Every moment of ``videos``, unpadded: one (sum of their lengths, D) float32 tensor
        per name, the videos' rows back to back in the order given; and None (no mask)."""
        videos = np.asarray(videos)
        if self.streamed:
            arrays, first = self._read(videos, names)
        else:
            arrays, first = self.arrays, self.offsets[videos]
        n = self.lengths[videos]
        rows = np.repeat(first - np.r_[0, np.cumsum(n)[:-1]], n) + np.arange(int(n.sum()))
        rows_t = torch.from_numpy(rows)
        return [arrays[k][rows_t].to(device=device, dtype=torch.float32) for k in names], None

    def batches(self, jobs: Iterable[tuple], names: Sequence[str], device="cpu",
                prefetch: int | None = None, flat: bool = False) -> Iterator[tuple]:
        """``batch(videos, names, starts, lengths)`` for each ``(videos, starts, lengths)`` of
        ``jobs`` (starts/lengths may be None), in order; ``flat``: ``moments(videos, names)``
        instead.  Streamed, the next ``prefetch`` batches are read on a thread while the
        current one is in use."""
        jobs = iter(jobs)
        get = (lambda v, s, n: self.moments(v, names)) if flat else \
            (lambda v, s, n: self.batch(v, names, s, n, dtype=None))

        def out(got):       # float32 on the device; the caller holds the only reference
            return ([b.to(device=device, dtype=torch.float32) for b in got[0]],
                    None if got[1] is None else got[1].to(device))
        if not self.streamed:
            for job in jobs:
                yield out(get(*job))
            return
        ahead = PREFETCH if prefetch is None else max(1, prefetch)
        with ThreadPoolExecutor(1, thread_name_prefix="l2l-featureset") as pool:
            pending = []
            try:
                for job in jobs:
                    pending.append(pool.submit(get, *job))
                    if len(pending) > ahead:
                        yield out(pending.pop(0).result())
                while pending:
                    yield out(pending.pop(0).result())
            finally:
                for f in pending:
                    f.cancel()

    def column(self, name: str) -> torch.Tensor:
        """(M, D) every moment of array ``name``, in video order (streamed: read now)."""
        if not self.streamed:
            return self.arrays[name]
        arrays, _ = self._read(np.arange(len(self)), [name])
        return arrays[name]

    def targets(self, videos: np.ndarray, num_classes: int) -> torch.Tensor:
        """(B, C) float: each video's labels, weight 1/len(labels) each."""
        t = torch.zeros(len(videos), num_classes)
        for r, v in enumerate(videos):
            t[r, self.labels[v]] = 1.0 / len(self.labels[v])
        return t


def labelled_ids(store, subset: str) -> list[str]:
    """The ids of ``subset``'s videos that have labels (one index query)."""
    ids = store.ids(subset)
    got = store.stored(ids)
    return [v for v in ids if v in got and got[v][0].labels]


def choose_streaming(store, sets: Sequence[tuple[Sequence[str], Sequence[str]]],
                     budget: int) -> list[bool]:
    """For each (names, ids) of ``sets``, whether to stream it: sets are kept in memory, in
    order, while they fit in ``budget`` bytes together; the rest are streamed."""
    out, used = [], 0
    for names, ids in sets:
        need = FeatureSet.nbytes(store, names, ids)
        out.append(used + need > budget)
        if not out[-1]:
            used += need
    return out


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Video indices in batches of ``batch_size``, shortest videos first (similar lengths
    share a batch, so little is padded)."""
    order = np.argsort(lengths, kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict(model: SkimNet, data: FeatureSet, *, batch_size: int = 256, device="cpu",
            steps: int | None = None, aggregated: bool = True, stride: int = 1,
            interpolate: bool = False, recognition: str | None = None
            ) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Video-level probabilities (V, C) and, per queried bank, each video's picks (k,) in step
    order.  ``stride``/``interpolate``: the subsampled index (see ``SkimNet.forward``);
    ``recognition``: a bank name classified by ``model.recognizer`` at the picks."""
    model.eval()
    names = list(model.config.features) + ([recognition] if recognition else [])
    probs = np.zeros((len(data), model.config.num_classes), np.float32)
    picks = {n: [None] * len(data) for n in model.queried}
    groups = length_batches(data.lengths, batch_size)
    for vids, (banks, mask) in zip(groups, data.batches(((v, None, None) for v in groups),
                                                        names, device=device)):
        rec = banks.pop() if recognition else None
        out = model(banks, mask, steps=steps, aggregated=aggregated, stride=stride,
                    interpolate=interpolate, recognition_bank=rec)
        probs[vids] = torch.softmax(out.logits, 1).cpu().numpy()
        for n, p in out.picks.items():
            p = p.cpu().numpy()
            for r, v in enumerate(vids):
                picks[n][v] = p[r]
    return probs, picks
