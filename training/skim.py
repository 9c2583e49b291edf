"""train-skim: fit IMGAUD-SKIMMING on the cached per-moment features of a store.

What is here: the training configuration and its schedule (``TrainConfig``, ``plan``), the
loop ``train_skim`` with its callbacks (CSV log, checkpoint, progress) and the per-moment
recognition classifier.  What is not: reading features (``FeatureSet`` and ``predict`` live in
``evaluation/featureset.py`` and are re-exported here), baselines, costs and reports
(``evaluation/``), the network itself and its checkpoint reader ``load_skim``
(``models/skim.py``).

Recipe (docs/method.md section 3): SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 1e-2 with
the classifier at 0.1 x lr, batch 256 videos, 25 epochs, lr / 10 at epochs 15 and 20 (scaled
with the epochs run); every training video is cropped to a random contiguous window of 200-500
moments (clipped to its length); shorter videos are padded and masked.  Psi comes from the
student and stays frozen.  Without a student (or with ``fresh_classifier``), the classifier
starts fresh and trains at the full lr.

Small sets (``plan``): the batch is capped at a quarter of the training set (at least 2), and
the epochs are raised until the run makes ``min_steps`` optimizer steps.  ActivityNet (10,024
training videos: 40 batches of 256 an epoch, 1,000 steps in 25 epochs) runs the paper's recipe
unchanged; 48 videos run at batch 12 for 125 epochs.  A run under ``SHORT_RUN`` steps warns.

Determinism: each epoch's shuffling and crops come from ``default_rng((seed, epoch))``, so a
resumed run ends with the same weights as an uninterrupted one.

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

from l2l.evaluation.featureset import (FeatureSet, choose_streaming, labelled_ids,  # noqa: F401
                                       memory_budget, predict, return_freed_memory)
from l2l.evaluation.metrics import summary
from l2l.models.skim import (CHECKPOINT, FORMAT, SkimError, SkimNet, build_skim,  # noqa: F401
                             load_skim, resolve_device, skim_from_student)


# ---- data ---------------------------------------------------------------------------------
def random_crops(lengths: np.ndarray, lo: int, hi: int, rng: np.random.Generator):
    """Per video a window length in [lo, hi] clipped to the video, and a random start."""
    want = rng.integers(lo, hi + 1, size=len(lengths))
    n = np.minimum(want, lengths)
    starts = (rng.random(len(lengths)) * (lengths - n + 1)).astype(np.int64)
    return starts, n



# ---- configuration and checkpoints --------------------------------------------------------
SHORT_RUN = 200      # optimizer steps under which a run is reported as too short to mean much

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 10                       # T
    indexing: str = "audiovisual"         # audiovisual | visual | single
    features: tuple[str, ...] = ()        # banks; () = the variant's default
    epochs: int = 25                      # at least; more when needed to reach min_steps
    batch_size: int = 256                 # at most; capped at a quarter of the training set
    min_steps: int = 500                  # optimizer steps at least (0: epochs as given)
    lr: float = 0.01
    classifier_lr_factor: float = 0.1     # for a classifier taken from the student
    fresh_classifier: bool = False        # a new classifier at full lr (authors' single variant)
    readout: str = "inputs"               # average x_0..x_{T-1} ("inputs") or x_1..x_T ("outputs")
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (15, 20)  # at 25 epochs; scaled to ``epochs``
    crop_min: int = 200
    crop_max: int = 500
    train_subset: str = "training"
    val_subset: str = "validation"
    recognition_features: str = ""        # train a per-moment classifier on this bank too
    seed: int = 0

    def plan(self, num_train: int) -> tuple[int, int]:
        """(batch size, epochs) for ``num_train`` training videos (see the module docstring)."""
        bs = max(1, min(self.batch_size, max(2, num_train // 4)))
        per_epoch = -(-num_train // bs)
        if num_train % bs == 1 and num_train > 1:
            per_epoch -= 1                        # the lone last video is dropped (BatchNorm)
        epochs = max(self.epochs, -(-self.min_steps // max(per_epoch, 1)))
        return bs, epochs

    def scaled_milestones(self, epochs: int | None = None) -> list[int]:
        e = self.epochs if epochs is None else epochs
        return sorted({max(1, round(m * e / 25)) for m in self.milestones})

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
    """Writes ``checkpoint.pt`` (atomically): everything needed to resume and to evaluate.
    After every ``every``-th epoch and the last (``last``); a long run on a small set (hundreds
    of short epochs) so writes about 25 checkpoints, not hundreds."""

    def __init__(self, path: Path, static: dict, *, every: int = 1, last: int | None = None):
        self.path, self.static, self.every, self.last = path, static, max(1, every), last

    def __call__(self, row: dict, *, model, optimizer, scheduler, **_) -> None:
        if row["epoch"] % self.every and row["epoch"] != self.last:
            return
        obj = {**self.static, "epoch": row["epoch"], "state_dict": model.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "last": row}
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(self.path)


# ---- training -----------------------------------------------------------------------------
def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, 1)).sum(1).mean()


def evaluate_epoch(model, data: FeatureSet, *, batch_size, device, classes) -> dict:
    probs, _ = predict(model, data, batch_size=batch_size, device=device)
    t = data.targets(np.arange(len(data)), len(classes)).numpy()
    loss = float(-(t * np.log(np.clip(probs, 1e-12, None))).sum(1).mean())
    s = summary(data.ids, probs, data.labels, classes)
    return {"val_loss": loss, "val_mAP": s["mAP"], "val_top1": s["top1"]}


def train_skim(features, out, *, student=None, config: TrainConfig = TrainConfig(),
               device: str = "auto", resume: bool = False, progress: bool = False,
               callbacks: Sequence[Callable] = (), warn: Callable[[str], None] = print,
               memory_budget_gb: float | None = None) -> dict:
    """Train on store ``features`` (a path or an open store), writing ``checkpoint.pt`` and
    ``log.csv`` into ``out``.  ``student``: a ``train-student`` checkpoint (file or folder), or
    a module with ``fusion`` and ``classifier`` over the store's classes.  ``warn``: where a
    too-short run is reported.  ``memory_budget_gb``: the training and validation features
    are held in memory while they fit in it together (training first), and streamed from the
    store batch by batch otherwise (the same batches, bit for bit; None: a quarter of the
    machine's RAM).  Returns the last epoch's log row.

    Runs with torch's deterministic algorithms on (restored afterwards; ops without a
    deterministic version warn instead of failing), so a run repeats exactly on one machine."""
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(features, out, student=student, config=config, device=device,
                      resume=resume, progress=progress, callbacks=callbacks, warn=warn,
                      budget=memory_budget(memory_budget_gb))
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


def _train(features, out, *, student, config: TrainConfig, device: str, resume: bool,
           progress: bool, callbacks: Sequence[Callable], warn: Callable[[str], None],
           budget: int) -> dict:
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
    kwargs = dict(indexing=config.indexing, steps=config.steps, readout=config.readout,
                  features=tuple(config.features) or None)
    student_info = None
    if isinstance(student, torch.nn.Module):       # an in-memory student (tests, notebooks)
        n = student.classifier.out_features
        st, info = student, {"path": None, "hash": None,
                             "classes": classes if n == len(classes) else [None] * n}
    elif student is not None:
        from l2l.models.release import load_any_student
        from l2l.models.students import WeightsError
        try:         # a train-student checkpoint, or the authors' ImageAudioNet_*.pth
            st, info = load_any_student(student, classes=classes, class_order=(
                store.info().get("release") or {}).get("class_order"))
        except WeightsError as e:
            raise SkimError(str(e)) from None
    if student is not None:
        if list(info["classes"]) != classes:
            raise SkimError(f"student {student} was trained on {len(info['classes'])} classes "
                            f"that differ from the store's {len(classes)}")
        model = skim_from_student(st, fresh_classifier=config.fresh_classifier, **kwargs)
        student_info = {"path": info["path"], "hash": info["hash"]}
        head = head_state(st.fusion, st.classifier)
        pretrained = model.classifier.weight.shape == st.classifier.weight.shape and \
            torch.equal(model.classifier.weight, st.classifier.weight)
    else:
        model = build_skim(num_classes=len(classes), freeze_fusion=False, **kwargs)
        head, pretrained = None, False
    rec_dim = 0
    names = list(model.config.features)
    extra = [config.recognition_features] if config.recognition_features else []
    labelled = {sub: labelled_ids(store, sub) for sub in (config.train_subset, config.val_subset)}
    stream = choose_streaming(store, [([*names, *extra], labelled[config.train_subset]),
                                      (names, labelled[config.val_subset])], budget)
    train = FeatureSet.from_store(store, names, subset=None, classes=classes, extra=extra,
                                  ids=labelled[config.train_subset], stream=stream[0])
    if len(train) == 0:
        raise SkimError(f"{store.path}: no labelled {config.train_subset!r} videos to train on")
    val = FeatureSet.from_store(store, names, subset=None, classes=classes,
                                ids=labelled[config.val_subset], stream=stream[1])
    if train.streamed:
        return_freed_memory()                     # the budget counts the peak, not the heap kept
    bs, epochs = config.plan(len(train))
    total_steps = epochs * (len(train) // bs + (len(train) % bs > 1))
    changed = ([f"batch {config.batch_size} -> {bs} (at most a quarter of the {len(train)} "
                f"training videos)"] if bs != config.batch_size else []) + \
              ([f"epochs {config.epochs} -> {epochs} (to make min_steps {config.min_steps} "
                f"optimizer steps; --min-steps 0 keeps the epochs)"] if epochs != config.epochs else [])
    said = []                            # said at the start, one line: what the run does
    if total_steps < SHORT_RUN:          # instead of what was asked, and a run too short
        said.append(f"warning: train-skim makes only {total_steps} optimizer steps ({epochs} "
                    f"epochs of {len(train)} videos at batch {bs}); under {SHORT_RUN} the result "
                    f"means little: raise --min-steps or --epochs")
    if changed:
        said.append(f"note: train-skim runs {'; '.join(changed)}")
    if said:
        warn(" -- ".join(said))
    if config.recognition_features:
        rec_dim = int(store.records(train.ids[0])[config.recognition_features].shape[1])
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
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, config.scaled_milestones(epochs), gamma=0.1)

    static = {"format": FORMAT, "config": model.config.to_dict(), "train_config": config.to_dict(),
              "classes": classes, "student": student_info, "head": head,
              "recognizer": {"features": config.recognition_features, "dim": rec_dim} if rec_dim else None,
              "store": str(store.path), "plan": {"batch_size": bs, "epochs": epochs,
                                                 "steps": total_steps}}
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
        _drop_rows_after(out / "log.csv", start)   # epochs run after it are run again
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({k: v for k, v in static.items()
                                                 if k != "head"}, indent=2))
    callbacks = [CsvLog(out / "log.csv"),
                 Checkpointer(ck_path, static, every=max(1, epochs // 25), last=epochs), *callbacks]

    row = {}
    for epoch in range(start, epochs):
        rng = np.random.default_rng((config.seed, epoch))
        model.train()
        if model.fusion is not None and not any(p.requires_grad for p in model.fusion.parameters()):
            model.fusion.eval()
        perm = rng.permutation(len(train))
        if len(perm) % bs == 1 and len(perm) > 1:
            perm = perm[:-1]                      # BatchNorm needs 2+ videos per batch
        total, count, t0 = 0.0, 0, time.time()
        bar = tqdm(total=-(-len(perm) // bs), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        jobs = []                                 # the epoch's batches and crops, drawn first
        for s in range(0, len(perm), bs):
            vids = perm[s:s + bs]
            jobs.append((vids, *random_crops(train.lengths[vids], config.crop_min,
                                             config.crop_max, rng)))
        for (vids, _, _), (banks, mask) in zip(jobs, train.batches(jobs, names, device=dev)):
            bar.update()
            target = train.targets(vids, len(classes)).to(dev)
            loss = soft_cross_entropy(model(banks, mask).logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(vids)
            count += len(vids)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        lr = opt.param_groups[0]["lr"]            # the lr this epoch trained with
        sched.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": total / count,
               "seconds": round(time.time() - t0, 2)}
        if len(val):
            row.update(evaluate_epoch(model, val, batch_size=bs, device=dev, classes=classes))
        if rec_dim and epoch == epochs - 1:
            fit_recognizer(model.recognizer, train, config.recognition_features, device=dev,
                           seed=config.seed)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.items()))
        for cb in callbacks:
            cb(row, model=model, optimizer=opt, scheduler=sched)
    return row


def _drop_rows_after(path: Path, epoch: int) -> None:
    """Keep the rows of ``log.csv`` up to ``epoch`` (the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and int(rows[-1]["epoch"]) > epoch:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if int(r["epoch"]) <= epoch)


def fit_recognizer(linear: torch.nn.Linear, data: FeatureSet, name: str, *, device, seed: int,
                   epochs: int = 10, batch_size: int = 4096, lr: float = 0.1) -> float:
    """Train the per-moment recognition classifier on every training moment of bank ``name``,
    each moment labelled with its video's labels (spread evenly).  Returns the last loss."""
    g = torch.Generator().manual_seed(seed)
    x = data.column(name)
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
