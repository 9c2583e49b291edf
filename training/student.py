"""Training the IMGAUD2VID student (``l2l train-student``) from a feature store's cached inputs.

What is here: the training config (docs/method.md's optimiser and schedule as defaults), the losses,
a moment loader that reads ``frames``/``logmel`` (and ``teacher``/``teacher_logits``) video by
video from the store, and one readable loop with per-epoch checkpoints, resume, a tqdm bar and a
metrics CSV.  What is not: decoding media (training only reads the store), the models
(``models/students.py``) or running the trained student over a store (``stages/features.py``).

Objectives:
- ``distill``: L1(student embedding, teacher descriptor) + kl_weight x KL(teacher's class
  distribution || student's); the classifier has the teacher's classes.
- ``classify``: cross-entropy with the video's label on each of its moments (no teacher needed).
- ``both``: L1 + cross-entropy on the data set's classes, plus the KL term when the teacher's
  logits have exactly those classes (a teacher fine-tuned on the data set).

Initialisation (the authors'): both trunks from ImageNet's ResNet-18 (``image_weights`` /
``audio_weights`` = "imagenet", the audio trunk without its 1-channel conv1), or "random", or a
resnet18 state-dict file.  Fine-tuning (the recipe's second step): ``init`` = a distilled
student; its trunks and Psi are loaded, its classifier too when it has the store's classes,
else a fresh one for them, and ``objective="classify"`` trains it with cross-entropy on the
videos' labels.

Output folder: ``checkpoints/epoch-NNNN.pt`` (the last two kept; each with optimiser state),
``student.pt`` (the final model), ``metrics.csv`` and ``config.json``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from l2l.models.students import CHECKPOINT_NAME, build_student, read_checkpoint, save_student
from ..core.errors import L2LError

OBJECTIVES = ("distill", "classify", "both")
KEEP_CHECKPOINTS = 2


class TrainError(L2LError, ValueError):
    """A store or an output folder that cannot be trained from as asked; one line saying why."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    objective: str = "distill"
    # optimiser and schedule (docs/method.md section 2)
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] | None = None   # None: (30, 50) scaled by epochs / 60
    gamma: float = 0.1
    # losses
    kl_weight: float = 1.0          # lambda; no source fixes it (docs/method.md)
    temperature: float = 1.0
    # data
    subset: str | None = "training"
    max_moments: int | None = None  # moments drawn per epoch (None: all)
    moments_per_video: int | None = None  # K random moments of each video per epoch (None: all)
    seed: int = 0
    # model
    image_weights: str | None = "imagenet"  # "imagenet", "random" or a resnet18 state-dict path
    audio_weights: str | None = "imagenet"  # the same, for all of the audio trunk but conv1
    audio_pool: str = "max"                 # over time: "max" (their code: networks.py, AudioNet,
                                            # line 76, which made their release) or "avg" (paper)
    init: str | None = None                 # a student checkpoint (file/folder) to fine-tune
    teacher_weights: str | None = None  # check the store's teacher arrays came from these

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise TrainError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.moments_per_video is not None and self.moments_per_video < 1:
            raise TrainError(f"moments_per_video must be at least 1, not {self.moments_per_video}")

    def schedule(self) -> tuple[int, ...]:
        if self.milestones is not None:
            return tuple(self.milestones)
        return tuple(sorted({max(1, round(m * self.epochs / 60)) for m in (30, 50)}))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (0-based): lr x gamma per milestone reached."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.schedule())


# ---- losses -----------------------------------------------------------------------------------
def student_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], config: TrainConfig
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective's loss on one batch, and its parts (``l1``, ``kl``, ``ce``) as floats.
    ``batch``: ``teacher`` (B, 512), ``teacher_logits`` (B, K), ``label`` (B,) int64 as needed."""
    parts: dict[str, torch.Tensor] = {}
    logits = out["logits"].float()
    if config.objective in ("distill", "both"):
        parts["l1"] = F.l1_loss(out["imageaudio"].float(), batch["teacher"].float())
        t_logits = batch["teacher_logits"].float()
        if t_logits.shape[1] == logits.shape[1]:
            T = config.temperature
            parts["kl"] = config.kl_weight * T * T * F.kl_div(
                F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1),
                log_target=True, reduction="batchmean")
    if config.objective in ("classify", "both"):
        parts["ce"] = F.cross_entropy(logits, batch["label"])
    loss = sum(parts.values())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


# ---- data -------------------------------------------------------------------------------------
class MomentLoader:
    """Batches of moments from a store.  Each epoch draws its moments with a seed fixed by
    (seed, epoch): all of them, or ``moments_per_video`` (K) of each video (all of a shorter
    one), then at most ``max_moments`` of those; it reads videos a chunk at a time with
    ``Store.read`` and shuffles within the chunk, so memory stays bounded by the chunk."""

    def __init__(self, store, ids: list[str], names: list[str], labels: dict[str, int], *,
                 batch_size: int, max_moments: int | None, seed: int, chunk_videos: int = 32,
                 moments_per_video: int | None = None):
        self.store, self.ids, self.names, self.labels = store, ids, names, labels
        self.counts = np.array([store.meta(v).num_moments for v in ids], np.int64)
        self.batch_size, self.max_moments, self.seed = batch_size, max_moments, seed
        self.chunk_videos, self.per_video = chunk_videos, moments_per_video

    def __len__(self) -> int:
        n = int(self.counts.sum() if self.per_video is None
                else np.minimum(self.counts, self.per_video).sum())
        n = n if self.max_moments is None else min(self.max_moments, n)
        return -(-n // self.batch_size)

    def draw(self, epoch: int) -> np.ndarray:
        """The moments of ``epoch``: sorted positions in the concatenation of all videos'."""
        return self._draw(np.random.default_rng((self.seed, epoch)))

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        total = int(self.counts.sum())
        take = np.arange(total)
        if self.per_video is not None:
            starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
            take = np.concatenate([s + np.sort(rng.choice(c, min(int(c), self.per_video),
                                                          replace=False))
                                   for s, c in zip(starts, self.counts)] or [take[:0]])
        if self.max_moments is not None and self.max_moments < len(take):
            take = np.sort(rng.choice(take, self.max_moments, replace=False))
        return take

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng((self.seed, epoch))
        take = self._draw(rng)
        video_of = np.repeat(np.arange(len(self.ids)), self.counts)[take]
        moment_of = take - np.concatenate([[0], np.cumsum(self.counts)[:-1]])[video_of]
        order = rng.permutation(np.unique(video_of))
        carry: dict[str, list[np.ndarray]] = {}
        for c in range(0, len(order), self.chunk_videos):
            parts: dict[str, list[np.ndarray]] = {k: list(v) for k, v in carry.items()}
            for vi in order[c:c + self.chunk_videos]:
                rows = np.sort(moment_of[video_of == vi])
                got = self.store.read(self.ids[vi], self.names)
                for n in self.names:
                    parts.setdefault(n, []).append(np.asarray(got[n])[rows])
                parts.setdefault("label", []).append(
                    np.full(len(rows), self.labels.get(self.ids[vi], -1), np.int64))
            pool = {k: np.concatenate(v) for k, v in parts.items()}
            perm = rng.permutation(len(pool["label"]))
            pool = {k: v[perm] for k, v in pool.items()}
            n_full = len(perm) // self.batch_size * self.batch_size
            for s in range(0, n_full, self.batch_size):
                yield {k: v[s:s + self.batch_size] for k, v in pool.items()}
            carry = {k: [v[n_full:]] for k, v in pool.items()}
        if carry and len(carry["label"][0]):
            yield {k: v[0] for k, v in carry.items()}


def _check_configs(store, ids: list[str], names: list[str]) -> dict[str, dict]:
    """Every video's arrays of one name must come from one stage config; returns name -> config."""
    first: dict[str, tuple[str, dict]] = {}
    for vid in ids:
        recs = store.records(vid)
        for n in names:
            if n not in recs:
                raise TrainError(f"{store.path}: video {vid} has no {n!r} array; run l2l extract "
                                 f"with the stage that makes it")
            if n not in first:
                first[n] = (vid, recs[n].config)
            elif recs[n].config != first[n][1]:
                raise TrainError(f"{store.path}: {n!r} of video {vid} was made with another config "
                                 f"than that of video {first[n][0]}; re-extract so they agree")
    return {n: c for n, (_, c) in first.items()}


# ---- the loop ---------------------------------------------------------------------------------
def train_student(store, out_dir, config: TrainConfig = TrainConfig(), *, device: str = "cpu",
                  progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train a student on ``store`` (a ``Store`` or a path) into ``out_dir``, resuming from the
    last checkpoint there.  Returns ``{path, hash, epochs, metrics}`` (metrics: the last row)."""
    from tqdm import tqdm
    if not hasattr(store, "read"):
        from l2l.store import open_store
        store = open_store(store)
    out = Path(out_dir)
    c = config
    info = store.info()
    ids = store.ids(c.subset)
    if not ids:
        raise TrainError(f"{store.path}: no videos{f' in subset {c.subset!r}' if c.subset else ''}")

    # labels and which arrays to read
    names = ["frames", "logmel"]
    classes = list(info.get("classes") or sorted({l for v in ids for l in store.meta(v).labels}))
    labels = {v: classes.index(store.meta(v).labels[0]) for v in ids
              if store.meta(v).labels and store.meta(v).labels[0] in classes}
    if c.objective in ("classify", "both"):
        ids = [v for v in ids if v in labels]
        if not ids:
            raise TrainError(f"{store.path}: no labelled videos to classify")
    if c.objective in ("distill", "both"):
        names += ["teacher", "teacher_logits"]
    made_by = _check_configs(store, ids, names)
    if c.teacher_weights is not None and "teacher" in made_by:
        from l2l.models.teacher import weights_fingerprint
        want = weights_fingerprint(None if c.teacher_weights == "random" else c.teacher_weights)
        if made_by["teacher"].get("weights_hash") != want:
            raise TrainError(f"{store.path}: its teacher arrays come from weights "
                             f"{made_by['teacher'].get('weights')!r}, not {c.teacher_weights!r}; "
                             f"re-run l2l extract --teacher-weights {c.teacher_weights}")
    if c.objective == "distill":
        from l2l.models.teacher import teacher_classes
        k = store.read(ids[0], ["teacher_logits"])["teacher_logits"].shape[1]
        classes = teacher_classes(k)

    run_config = json.loads(json.dumps({
        "train": dataclasses.asdict(c),
        "classes_from": "teacher" if c.objective == "distill" else "store",
        "inputs": {n: made_by[n] for n in names}}, default=str))
    torch.manual_seed(c.seed)
    if c.init is not None:
        model, init_hash = _from_student(c.init, classes)
        run_config["train"]["init"] = f"student {init_hash}"   # the content, not the path
        for k in ("image_weights", "audio_weights", "audio_pool"):
            run_config["train"][k] = None                     # taken from the checkpoint
    else:
        model = build_student(num_classes=len(classes), image_weights=c.image_weights,
                              audio_weights=c.audio_weights, time_pool=c.audio_pool)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                          weight_decay=c.weight_decay)
    start = _resume(out, model, opt, run_config, log)
    out.mkdir(parents=True, exist_ok=True)
    # the store's path is recorded but kept out of the hashed config: the same data read from a
    # moved or copied store gives the same checkpoint hash (and so the same feature cache keys)
    (out / "config.json").write_text(json.dumps({"store": str(store.path), **run_config},
                                                indent=2, default=str))
    loader = MomentLoader(store, ids, names, labels, batch_size=c.batch_size,
                          max_moments=c.max_moments, seed=c.seed,
                          moments_per_video=c.moments_per_video)
    cuda = torch.device(device).type == "cuda"
    row: dict = {}
    for epoch in range(start, c.epochs):
        for g in opt.param_groups:
            g["lr"] = c.lr_at(epoch)
        model.train()
        t0, sums, n_seen, n_correct = time.perf_counter(), {}, 0, 0
        bar = tqdm(loader.epoch(epoch), total=len(loader), disable=not progress,
                   desc=f"epoch {epoch + 1}/{c.epochs}", unit="batch", dynamic_ncols=True)
        for batch in bar:
            t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}
            with torch.autocast("cuda", torch.bfloat16, enabled=cuda):
                outp = model(t["frames"], t["logmel"])
            loss, parts = student_loss(outp, t, c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(t["label"])
            n_seen += b
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * b
            if c.objective != "distill":
                n_correct += int((outp["logits"].argmax(1) == t["label"]).sum())
            bar.set_postfix(loss=f"{sums['loss'] / n_seen:.4f}")
        row = {"epoch": epoch + 1, "lr": c.lr_at(epoch), "moments": n_seen,
               **{k: round(v / max(n_seen, 1), 6) for k, v in sums.items()},
               "accuracy": round(n_correct / n_seen, 4) if c.objective != "distill" and n_seen else "",
               "seconds": round(time.perf_counter() - t0, 2)}
        _append_csv(out / "metrics.csv", row)
        _save_epoch(out, model, opt, run_config, classes, epoch + 1)
        log(" ".join(f"{k} {v}" for k, v in row.items()))
    digest = save_student(model, out / CHECKPOINT_NAME, config=run_config, classes=classes)
    return {"path": str(out / CHECKPOINT_NAME), "hash": digest, "epochs": c.epochs, "metrics": row}


def _from_student(path, classes: list[str]):
    """A student initialised from the checkpoint at ``path`` for ``classes``: every weight
    loaded; the classifier too when the checkpoint has exactly these classes, else a fresh
    one.  Returns (model, the checkpoint's hash)."""
    from l2l.models.students import WeightsError, load_student, model_kwargs
    try:
        init, info = load_student(path)
    except WeightsError as e:
        raise TrainError(f"--init: {e}") from None
    model = build_student(**{**model_kwargs(init), "num_classes": len(classes)})
    state = init.state_dict()
    if list(info["classes"]) != list(classes):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model.load_state_dict(state, strict=False)
    return model, info["hash"]


def _resume(out: Path, model, opt, run_config: dict, log) -> int:
    """Load the last epoch checkpoint in ``out`` (same run config only); the next epoch (0-based)."""
    found = sorted((out / "checkpoints").glob("epoch-*.pt"))
    if not found:
        return 0
    ck = read_checkpoint(found[-1])
    if ck["config"] != run_config:
        raise TrainError(f"{out}: holds a run with another config ({found[-1].name}); "
                         f"use a new --out or delete it")
    model.load_state_dict(ck["state_dict"])
    opt.load_state_dict(ck["optimizer"])
    log(f"resuming from {found[-1]} (epoch {ck['epoch']})")
    return int(ck["epoch"])


def _save_epoch(out: Path, model, opt, run_config: dict, classes: list[str], epoch: int) -> None:
    folder = out / "checkpoints"
    save_student(model, folder / f"epoch-{epoch:04d}.pt",
                 config=run_config, classes=classes,
                 extra={"epoch": epoch, "optimizer": opt.state_dict()})
    for old in sorted(folder.glob("epoch-*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()


def _append_csv(path: Path, row: dict) -> None:
    fields = ["epoch", "lr", "moments", "loss", "l1", "kl", "ce", "accuracy", "seconds"]
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
