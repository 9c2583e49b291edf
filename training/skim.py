"""train-skim: fit IMGAUD-SKIMMING on the cached per-moment features of a store.

What is here: ``FeatureSet`` (a subset's features read from the store once, into contiguous
arrays, and padded batches cut from them by indexing), ``predict`` (a skim model over a
FeatureSet), the training loop ``train_skim`` with its callbacks (CSV log, checkpoint, progress),
and ``load_skim`` for the checkpoint it writes.  What is not: baselines, costs and reports
(``evaluation/``), the network itself (``models/skim.py``).

Recipe (METHOD.md section 3): SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 1e-2 with
the classifier at 0.1 x lr, batch 256 videos, 25 epochs, lr / 10 at epochs 15 and 20 (scaled
with ``epochs``); every training video is cropped to a random contiguous window of 200-500
moments (clipped to its length); shorter videos are padded and masked.  Psi comes from the
student and stays frozen.  Without a student, Psi and the classifier start fresh and both train
at the full lr.

Multi-label videos (ActivityNet): the loss is cross-entropy against a target spread evenly over
the video's labels (one label: the usual cross-entropy), so no label is thrown away.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from l2l.models.skim import (CHECKPOINT, FORMAT, SkimError, SkimNet, build_skim,  # noqa: F401
                             load_skim, skim_from_student)



# ---- data ---------------------------------------------------------------------------------
class FeatureSet:
    """One subset's per-moment arrays, read from the store with a single ``read_many``.

    ``arrays[name]``: (M, D) float16/float32, all videos' moments back to back; video i is
    rows ``offsets[i]:offsets[i+1]``.  ``labels[i]``: class indices of video i (empty when
    unlabelled)."""

    def __init__(self, ids, offsets, arrays, labels, metas=()):
        self.ids = list(ids)
        self.offsets = np.asarray(offsets, np.int64)
        self.lengths = np.diff(self.offsets)
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.labels = [list(lab) for lab in labels]
        self.metas = list(metas)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_store(cls, store, names: Sequence[str], *, subset: str | None, classes: Sequence[str],
                   ids: Sequence[str] | None = None, extra: Sequence[str] = ()) -> "FeatureSet":
        from l2l.store import StoreError
        ids = list(store.ids(subset) if ids is None else ids)
        names = list(dict.fromkeys([*names, *extra]))
        try:
            batch = store.read_many(names, ids)
        except StoreError as e:
            raise SkimError(f"{e} (skimming needs the {', '.join(names)} features: run "
                            "`l2l extract` with the student features first)") from None
        index = {c: i for i, c in enumerate(classes)}
        labels = []
        for m in batch.metas:
            unknown = [lab for lab in m.labels if lab not in index]
            if unknown:
                raise SkimError(f"video {m.id!r} has label(s) {unknown} outside the store's classes")
            labels.append([index[lab] for lab in m.labels])
        return cls(batch.ids, batch.offsets, batch.arrays, labels, batch.metas)

    def labelled(self) -> "FeatureSet":
        keep = [i for i, lab in enumerate(self.labels) if lab]
        return self.subset(keep)

    def subset(self, keep: Sequence[int]) -> "FeatureSet":
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) \
            if len(keep) else np.zeros(0, np.int64)
        offsets = np.r_[0, np.cumsum(self.lengths[list(keep)])]
        return FeatureSet([self.ids[i] for i in keep], offsets,
                          {k: v.numpy()[rows] for k, v in self.arrays.items()},
                          [self.labels[i] for i in keep],
                          [self.metas[i] for i in keep] if self.metas else ())

    def batch(self, videos: np.ndarray, names: Sequence[str], starts: np.ndarray | None = None,
              lengths: np.ndarray | None = None, device="cpu"):
        """Banks (one (B, L, D) float32 tensor per name) and mask (B, L) bool for ``videos``,
        each the window [start, start + length) of its moments (default: all of them)."""
        videos = np.asarray(videos)
        if lengths is None:
            lengths = self.lengths[videos]
        if starts is None:
            starts = np.zeros(len(videos), np.int64)
        L = int(lengths.max())
        pos = np.arange(L)[None, :]
        mask = pos < lengths[:, None]
        rows = np.where(mask, self.offsets[videos][:, None] + starts[:, None] + pos, 0)
        rows_t = torch.from_numpy(rows)
        banks = [self.arrays[n][rows_t].to(device=device, dtype=torch.float32) for n in names]
        return banks, torch.from_numpy(mask).to(device)

    def targets(self, videos: np.ndarray, num_classes: int) -> torch.Tensor:
        """(B, C) float: each video's labels, weight 1/len(labels) each."""
        t = torch.zeros(len(videos), num_classes)
        for r, v in enumerate(videos):
            t[r, self.labels[v]] = 1.0 / len(self.labels[v])
        return t


def random_crops(lengths: np.ndarray, lo: int, hi: int, rng: np.random.Generator):
    """Per video a window length in [lo, hi] clipped to the video, and a random start."""
    want = rng.integers(lo, hi + 1, size=len(lengths))
    n = np.minimum(want, lengths)
    starts = (rng.random(len(lengths)) * (lengths - n + 1)).astype(np.int64)
    return starts, n


@torch.no_grad()
def predict(model: SkimNet, data: FeatureSet, *, batch_size: int = 256, device="cpu",
            steps: int | None = None, aggregated: bool = True, stride: int = 1,
            recognition: str | None = None) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Video-level probabilities (V, C) and, per queried bank, each video's picks (k,) in step
    order.  ``recognition``: a bank name classified by ``model.recognizer`` at the picks."""
    model.eval()
    names = list(model.config.features)
    order = np.argsort(data.lengths, kind="stable")       # similar lengths share a batch
    probs = np.zeros((len(data), model.config.num_classes), np.float32)
    picks = {n: [None] * len(data) for n in model.queried}
    for s in range(0, len(order), batch_size):
        vids = order[s:s + batch_size]
        banks, mask = data.batch(vids, names + ([recognition] if recognition else []), device=device)
        rec = banks.pop() if recognition else None
        out = model(banks, mask, steps=steps, aggregated=aggregated, stride=stride,
                    recognition_bank=rec)
        probs[vids] = torch.softmax(out.logits, 1).cpu().numpy()
        for n, p in out.picks.items():
            for r, v in enumerate(vids):
                picks[n][v] = p[r].cpu().numpy()
    return probs, picks


# ---- configuration and checkpoints --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 10                       # T
    indexing: str = "audiovisual"         # audiovisual | visual | single
    features: tuple[str, ...] = ()        # banks; () = the variant's default
    epochs: int = 25
    batch_size: int = 256
    lr: float = 0.01
    classifier_lr_factor: float = 0.1     # for a classifier taken from the student
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (15, 20)  # at 25 epochs; scaled to ``epochs``
    crop_min: int = 200
    crop_max: int = 500
    train_subset: str = "training"
    val_subset: str = "validation"
    recognition_features: str = ""        # train a per-moment classifier on this bank too
    seed: int = 0

    def scaled_milestones(self) -> list[int]:
        return sorted({max(1, round(m * self.epochs / 25)) for m in self.milestones})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["features"], d["milestones"] = list(self.features), list(self.milestones)
        return d


def head_state(fusion, classifier) -> dict:
    """Psi and classifier weights as the baselines use them (the student's, before skim
    training touched the classifier)."""
    return {"fusion": None if fusion is None else {k: v.detach().cpu().clone()
                                                    for k, v in fusion.state_dict().items()},
            "classifier": {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()}}


# ---- callbacks ----------------------------------------------------------------------------
class CsvLog:
    """Appends one row per epoch to ``log.csv``."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, row: dict, **_) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


class Checkpointer:
    """Writes ``checkpoint.pt`` (atomically) after every epoch: everything needed to resume
    and to evaluate."""

    def __init__(self, path: Path, static: dict):
        self.path, self.static = path, static

    def __call__(self, row: dict, *, model, optimizer, scheduler, **_) -> None:
        obj = {**self.static, "epoch": row["epoch"], "state_dict": model.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "last": row}
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(self.path)


# ---- training -----------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SkimError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, 1)).sum(1).mean()


def evaluate_epoch(model, data: FeatureSet, *, batch_size, device, classes) -> dict:
    from l2l.evaluation.metrics import summary
    probs, _ = predict(model, data, batch_size=batch_size, device=device)
    t = data.targets(np.arange(len(data)), len(classes)).numpy()
    loss = float(-(t * np.log(np.clip(probs, 1e-12, None))).sum(1).mean())
    s = summary(data.ids, probs, data.labels, classes)
    return {"val_loss": loss, "val_mAP": s["mAP"], "val_top1": s["top1"]}


def train_skim(features, out, *, student=None, config: TrainConfig = TrainConfig(),
               device: str = "auto", resume: bool = False, progress: bool = True,
               callbacks: Sequence[Callable] = ()) -> dict:
    """Train on store ``features`` (a path or an open store), writing ``checkpoint.pt`` and
    ``log.csv`` into ``out``.  ``student``: a ``train-student`` checkpoint (file or folder), or
    a module with ``fusion`` and ``classifier`` over the store's classes.  Returns the last
    epoch's log row."""
    from tqdm.auto import tqdm
    from l2l.store import Store, StoreError, open_store
    out = Path(out)
    ck_path = out / CHECKPOINT
    if ck_path.exists() and not resume:
        raise SkimError(f"{ck_path} exists: pass --resume to continue it, or another --out")
    try:
        store = features if isinstance(features, Store) else open_store(features)
        classes = list(store.info().get("classes") or [])
    except StoreError as e:
        raise SkimError(str(e)) from None
    if not classes:
        raise SkimError(f"{store.path}: the store records no classes")
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    kwargs = dict(indexing=config.indexing, steps=config.steps,
                  features=tuple(config.features) or None)
    student_info = None
    if isinstance(student, torch.nn.Module):       # an in-memory student (tests, notebooks)
        n = student.classifier.out_features
        st, info = student, {"path": None, "hash": None,
                             "classes": classes if n == len(classes) else [None] * n}
    elif student is not None:
        from l2l.models.students import WeightsError, load_student
        try:
            st, info = load_student(student)
        except WeightsError as e:
            raise SkimError(str(e)) from None
    if student is not None:
        if list(info["classes"]) != classes:
            raise SkimError(f"student {student} was trained on {len(info['classes'])} classes "
                            f"that differ from the store's {len(classes)}")
        model = skim_from_student(st, **kwargs)
        student_info = {"path": info["path"], "hash": info["hash"]}
        head = head_state(st.fusion, st.classifier)
        pretrained = torch.equal(model.classifier.weight, st.classifier.weight)
    else:
        model = build_skim(num_classes=len(classes), freeze_fusion=False, **kwargs)
        head, pretrained = None, False
    rec_dim = 0
    names = list(model.config.features)
    train = FeatureSet.from_store(store, names, subset=config.train_subset, classes=classes,
                                  extra=[config.recognition_features] if config.recognition_features else [])
    train = train.labelled()
    if len(train) == 0:
        raise SkimError(f"{store.path}: no labelled {config.train_subset!r} videos to train on")
    val = FeatureSet.from_store(store, names, subset=config.val_subset, classes=classes).labelled()
    if config.recognition_features:
        rec_dim = int(train.arrays[config.recognition_features].shape[1])
        model.recognizer = torch.nn.Linear(rec_dim, len(classes))
    model.to(dev)

    cls_params = [p for p in model.classifier.parameters() if p.requires_grad]
    cls_ids = {id(p) for p in cls_params}
    rest = [p for p in model.parameters()
            if p.requires_grad and id(p) not in cls_ids and
            (model.recognizer is None or all(p is not q for q in model.recognizer.parameters()))]
    factor = config.classifier_lr_factor if pretrained else 1.0
    opt = torch.optim.SGD([{"params": rest}, {"params": cls_params, "lr": config.lr * factor}],
                          lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, config.scaled_milestones(), gamma=0.1)

    static = {"format": FORMAT, "config": model.config.to_dict(), "train_config": config.to_dict(),
              "classes": classes, "student": student_info, "head": head,
              "recognizer": {"features": config.recognition_features, "dim": rec_dim} if rec_dim else None,
              "store": str(store.path)}
    start = 0
    if resume and ck_path.exists():
        _, ck = load_skim(ck_path)
        if ck["config"] != static["config"] or ck["train_config"] != static["train_config"] \
                or ck["classes"] != classes:
            raise SkimError(f"{ck_path} was trained with another config or classes; "
                            "resume needs the same options")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = ck["epoch"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({k: v for k, v in static.items()
                                                 if k != "head"}, indent=2))
    callbacks = [CsvLog(out / "log.csv"), Checkpointer(ck_path, static), *callbacks]

    rng = np.random.default_rng(config.seed + start)
    row = {}
    bs = config.batch_size
    for epoch in range(start, config.epochs):
        model.train()
        if model.fusion is not None and not any(p.requires_grad for p in model.fusion.parameters()):
            model.fusion.eval()
        perm = rng.permutation(len(train))
        if len(perm) % bs == 1 and len(perm) > 1:
            perm = perm[:-1]                      # BatchNorm needs 2+ videos per batch
        total, count, t0 = 0.0, 0, time.time()
        bar = tqdm(range(0, len(perm), bs), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for s in bar:
            vids = perm[s:s + bs]
            starts, lens = random_crops(train.lengths[vids], config.crop_min, config.crop_max, rng)
            banks, mask = train.batch(vids, names, starts, lens, device=dev)
            target = train.targets(vids, len(classes)).to(dev)
            loss = soft_cross_entropy(model(banks, mask).logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(vids)
            count += len(vids)
            bar.set_postfix(loss=f"{total / count:.4f}")
        lr = opt.param_groups[0]["lr"]            # the lr this epoch trained with
        sched.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": total / count,
               "seconds": round(time.time() - t0, 2)}
        if len(val):
            row.update(evaluate_epoch(model, val, batch_size=bs, device=dev, classes=classes))
        if rec_dim and epoch == config.epochs - 1:
            fit_recognizer(model.recognizer, train, config.recognition_features, device=dev,
                           seed=config.seed)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.items()))
        for cb in callbacks:
            cb(row, model=model, optimizer=opt, scheduler=sched)
    return row


def fit_recognizer(linear: torch.nn.Linear, data: FeatureSet, name: str, *, device, seed: int,
                   epochs: int = 10, batch_size: int = 4096, lr: float = 0.1) -> float:
    """Train the per-moment recognition classifier on every training moment of bank ``name``,
    each moment labelled with its video's labels (spread evenly).  Returns the last loss."""
    g = torch.Generator().manual_seed(seed)
    x = data.arrays[name]
    vid_of_row = np.repeat(np.arange(len(data)), data.lengths)
    t = data.targets(np.arange(len(data)), linear.out_features)
    opt = torch.optim.SGD(linear.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    loss = torch.tensor(math.nan)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                xb = x[idx].to(device=device, dtype=torch.float32)
                tb = t[vid_of_row[idx.numpy()]].to(device)
                loss = soft_cross_entropy(linear(xb), tb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return float(loss)
