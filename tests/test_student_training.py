"""``training/student.py`` and ``l2l train-student``: losses, schedule, a distillation step, the
loop's checkpoints / resume / metrics, and its errors, on a tiny store built here."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from l2l.models.cost import flops_per_moment
from l2l.models.students import build_student, load_student
from l2l.store import ArrayRecord, VideoMeta, create_store
from l2l.training.student import TrainConfig, TrainError, student_loss, train_student

CLASSES = ["red", "green", "blue"]
RANDOM_INIT = {"image_weights": "random", "audio_weights": "random"}   # nothing downloads
COLOURS = np.array([[220, 30, 30], [30, 200, 40], [30, 60, 230]], np.uint8)


def fake_moments(rng, label: int, n: int) -> dict[str, np.ndarray]:
    """n moments of class ``label``: a class-coloured square on noise, a log-mel with a bright
    class band, a teacher descriptor near a class prototype and teacher logits favouring one
    Kinetics class per label."""
    frames = rng.integers(0, 120, (n, 112, 112, 3), dtype=np.uint8)
    frames[:, 30:80, 30:80] = COLOURS[label]
    logmel = rng.normal(-8, 1, (n, 101, 40)).astype(np.float16)
    logmel[:, :, 5 + 10 * label:10 + 10 * label] += 6
    proto = np.random.default_rng(100 + label).random(512) * 2
    teacher = np.maximum(proto + rng.normal(0, 0.1, (n, 512)), 0).astype(np.float16)
    logits = rng.normal(0, 1, (n, 400)).astype(np.float16)
    logits[:, 10 * label] += 5
    return {"frames": frames, "logmel": logmel, "teacher": teacher, "teacher_logits": logits}


def record(name: str, config: dict | None = None) -> ArrayRecord:
    stage = {"frames": "decode", "logmel": "spectrogram"}.get(name, "teacher")
    return ArrayRecord(stage=stage, config=config or {"type": stage}, key=f"k-{name}",
                       upstream={}, versions={})


def make_store(path, *, videos_per_class=2, moments=6, teacher_config=None, seed=0):
    rng = np.random.default_rng(seed)
    store = create_store(path)
    for k in range(len(CLASSES)):
        for j in range(videos_per_class):
            vid = f"v{k}{j}"
            arrays = fake_moments(rng, k, moments)
            recs = {n: record(n, teacher_config if (n.startswith("teacher") and vid == "v10")
                              else None) for n in arrays}
            meta = VideoMeta(id=vid, labels=(CLASSES[k],), subset="training", duration=moments * 0.53,
                             fps=30.0, num_moments=moments, has_audio=True)
            store.put(meta, arrays, recs, replace=True)
    store.commit()
    store.set_info("classes", CLASSES)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s.zarr")


# ---- schedule and losses ----------------------------------------------------------------------
def test_schedule_defaults_and_scaling():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.momentum, c.nesterov, c.weight_decay) == \
        (60, 16, 1e-3, 0.9, True, 1e-4)
    assert c.schedule() == (30, 50)
    assert [c.lr_at(e) for e in (0, 29, 30, 49, 50, 59)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    assert TrainConfig(epochs=6).schedule() == (3, 5)
    assert TrainConfig(epochs=6, milestones=(2,)).lr_at(2) == pytest.approx(1e-4)
    with pytest.raises(TrainError, match="objective"):
        TrainConfig(objective="nope")


def test_losses_by_objective():
    out = {"imageaudio": torch.zeros(2, 512), "logits": torch.zeros(2, 4)}
    batch = {"teacher": torch.ones(2, 512), "teacher_logits": torch.zeros(2, 4),
             "label": torch.tensor([0, 1])}
    loss, parts = student_loss(out, batch, TrainConfig(objective="distill"))
    assert parts["l1"] == pytest.approx(1.0) and parts["kl"] == pytest.approx(0.0)
    loss, parts = student_loss(out, batch, TrainConfig(objective="classify"))
    assert set(parts) == {"ce"} and parts["ce"] == pytest.approx(np.log(4))
    batch["teacher_logits"] = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]])
    loss, parts = student_loss(out, batch, TrainConfig(objective="both", kl_weight=2.0))
    p = torch.softmax(batch["teacher_logits"], 1)
    kl = float((p * (p.log() - np.log(0.25))).sum(1).mean())
    assert parts["kl"] == pytest.approx(2.0 * kl, rel=1e-5)
    assert float(loss) == pytest.approx(1.0 + 2.0 * kl + np.log(4), rel=1e-5)


def test_one_distillation_step_lowers_the_loss():
    rng = np.random.default_rng(0)
    b = {k: torch.from_numpy(np.concatenate([fake_moments(rng, k2, 2)[k] for k2 in range(2)]))
         for k in ("frames", "logmel", "teacher", "teacher_logits")}
    torch.manual_seed(0)
    model = build_student(num_classes=400)
    model.train()
    cfg = TrainConfig(objective="distill", lr=1e-2)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    before, _ = student_loss(model(b["frames"], b["logmel"]), b, cfg)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _ = student_loss(model(b["frames"], b["logmel"]), b, cfg)
    assert float(after) < float(before.detach()) - 1e-3


# ---- the loop ---------------------------------------------------------------------------------
class Stop(Exception):
    pass


def test_train_resume_checkpoints_and_metrics(store, tmp_path):
    cfg = TrainConfig(objective="distill", epochs=2, batch_size=2, max_moments=2, lr=1e-2, **RANDOM_INIT)
    # uninterrupted run
    full = train_student(store, tmp_path / "full", cfg, progress=False, log=lambda s: None)
    # a run killed after its first epoch, then resumed
    def die(line):
        if line.startswith("epoch 1 "):
            raise Stop
    with pytest.raises(Stop):
        train_student(store, tmp_path / "cut", cfg, progress=False, log=die)
    assert not (tmp_path / "cut" / "student.pt").exists()
    lines = []
    resumed = train_student(store, tmp_path / "cut", cfg, progress=False, log=lines.append)
    assert lines[0].startswith("resuming from") and "epoch-0001.pt" in lines[0]
    assert resumed["hash"] == full["hash"]          # same data order, same optimiser state
    rows = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(int(r["moments"]) == 2 and np.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(1e-2) and float(rows[1]["lr"]) == pytest.approx(1e-3)
    model, info = load_student(tmp_path / "cut")
    assert info["hash"] == full["hash"] and len(info["classes"]) == 400
    assert info["config"]["train"]["objective"] == "distill"
    assert info["classes"][0] == "abseiling"                # the teacher's (Kinetics) classes
    # a different config in the same folder is refused, not mixed
    with pytest.raises(TrainError, match="another config"):
        train_student(store, tmp_path / "cut", TrainConfig(objective="distill", epochs=2,
                      batch_size=2, max_moments=2, lr=0.5, **RANDOM_INIT), progress=False, log=lambda s: None)


def test_cli_classify(store, tmp_path):
    from l2l.cli.main import main
    res = CliRunner().invoke(main, ["train-student", "--store", str(store.path), "--out",
                                    str(tmp_path / "o"), "--objective", "classify", "--epochs",
                                    "1", "--batch-size", "4", "--max-moments", "4", "--device",
                                    "cpu", "--no-progress", "--image-weights", "random",
                                    "--audio-weights", "random"])
    assert res.exit_code == 0, res.output
    assert "student " in res.output and "hash " in res.output
    model, info = load_student(tmp_path / "o" / "student.pt")
    assert info["classes"] == CLASSES and model.classifier.out_features == 3
    row = next(csv.DictReader(open(tmp_path / "o" / "metrics.csv")))
    assert row["ce"] != "" and row["l1"] == "" and 0 <= float(row["accuracy"]) <= 1
    bad = CliRunner().invoke(main, ["train-student", "--store", str(store.path), "--out",
                                    str(tmp_path / "p"), "--milestones", "x"])
    assert bad.exit_code != 0 and "--milestones" in bad.output


def test_fine_tune_a_distilled_student_on_the_store_classes(store, tmp_path):
    """--init: trunks and Psi come from the distilled (400-class) student, the classifier is
    replaced by one for the store's 3 classes and trained with cross-entropy."""
    distilled = train_student(store, tmp_path / "d", TrainConfig(
        objective="distill", epochs=1, batch_size=2, max_moments=2, **RANDOM_INIT),
        progress=False, log=lambda s: None)
    cfg = TrainConfig(objective="classify", epochs=1, batch_size=2, max_moments=4, lr=0.0,
                      weight_decay=0.0, init=str(tmp_path / "d"))
    tuned = train_student(store, tmp_path / "f", cfg, progress=False, log=lambda s: None)
    before, b_info = load_student(tmp_path / "d")
    after, a_info = load_student(tmp_path / "f")
    assert len(b_info["classes"]) == 400 and a_info["classes"] == CLASSES
    assert after.classifier.out_features == 3
    for name in ("image_trunk.conv1.weight", "audio_trunk.body.0.weight", "fusion.mlp.0.weight"):
        assert torch.equal(after.state_dict()[name], before.state_dict()[name]), name
    assert a_info["config"]["train"]["init"] == f"student {distilled['hash']}"
    assert tuned["metrics"]["ce"] > 0
    with pytest.raises(TrainError, match="--init"):
        train_student(store, tmp_path / "g", TrainConfig(objective="classify", epochs=1,
                      init=str(tmp_path / "nothing.pt")), progress=False)


def test_mixed_teacher_configs_are_refused(tmp_path):
    s = make_store(tmp_path / "mixed.zarr", videos_per_class=2, moments=2,
                   teacher_config={"type": "teacher", "weights_hash": "other"})
    with pytest.raises(TrainError, match="video v10 was made with another config"):
        train_student(s, tmp_path / "o", TrainConfig(epochs=1, **RANDOM_INIT), progress=False)
    # classify does not read the teacher arrays, so it is not affected
    train_student(s, tmp_path / "o2", TrainConfig(objective="classify", epochs=1, batch_size=2,
                                                  max_moments=2, **RANDOM_INIT),
                  progress=False, log=lambda s: None)


def test_wrong_teacher_weights_are_refused(store, tmp_path):
    with pytest.raises(TrainError, match="teacher arrays come from weights"):
        train_student(store, tmp_path / "o", TrainConfig(epochs=1, teacher_weights="random", **RANDOM_INIT),
                      progress=False)


# ---- end to end: make-synthetic -> extract -> train-student -> extract --student -> probe --------
def test_synthetic_classify_then_features_separate_the_classes(tmp_path):
    """The acceptance chain through the CLI, on a tiny synthetic set (3 classes x 3 videos of
    6-7 s, evidence on 40-50% of each video).  A ridge-regression probe, fitted on the training
    videos' evidence moments (moment time inside an annotated segment), classifies the validation
    videos' evidence moments.  Chance is 1/3; the threshold 0.75 is far above it (with ~15 test
    moments, P(>= 0.75 | guessing) < 1e-3).  What it shows: the stored features are per-moment,
    aligned with their moments and carry the class signature through the whole chain.  It does
    not show that training helped (features of a barely trained student already separate these
    saturated colours and distinct chords); the distillation-step and loop tests cover training.
    About 1-2 minutes on 2 busy CPU cores, most of it the student on CPU."""
    import json

    from l2l.cli.main import main
    from l2l.store import open_store

    r = CliRunner()
    syn, st, run = tmp_path / "syn", tmp_path / "st.zarr", tmp_path / "run"
    ok = r.invoke(main, ["make-synthetic", str(syn), "--classes", "3", "--videos-per-class", "3",
                         "--duration-min", "6", "--duration-max", "7", "--width", "64",
                         "--height", "48", "--evidence-min", "0.4", "--evidence-max", "0.5",
                         "--val-fraction", "0.34", "--workers", "2"])
    assert ok.exit_code == 0, ok.output
    common = ["extract", "--dataset", "synthetic", "--videos", str(syn / "videos"), "--annotations",
              str(syn / "annotations.json"), "--store", str(st), "--device", "cpu", "--no-progress"]
    ok = r.invoke(main, common)
    assert ok.exit_code == 0 and "failed 0" in ok.output, ok.output
    ok = r.invoke(main, ["train-student", "--store", str(st), "--out", str(run), "--objective",
                         "classify", "--epochs", "1", "--batch-size", "8", "--max-moments", "16",
                         "--lr", "0.01", "--device", "cpu", "--no-progress",
                         "--image-weights", "random", "--audio-weights", "random"])
    assert ok.exit_code == 0, ok.output
    ok = r.invoke(main, common + ["--student", str(run)])
    assert ok.exit_code == 0 and "failed 0" in ok.output, ok.output
    again = r.invoke(main, common + ["--student", str(run)])
    assert "done 0 / skipped 9" in again.output, again.output        # cached: not redone

    store = open_store(st)
    db = json.loads((syn / "annotations.json").read_text())["database"]
    classes = store.info()["classes"]
    # the models' costs were recorded with the first model stage, and `store info` shows them
    cost = store.info()["flops_per_moment"]
    assert cost["image_trunk"] == flops_per_moment(num_classes=len(classes))["image_trunk"] > 9e8
    shown = r.invoke(main, ["store", "info", str(st)])
    assert "cost       image_trunk" in shown.output and "GFLOPs per moment" in shown.output
    student_hash = load_student(run)[1]["hash"]

    def evidence(subset):
        X, y = [], []
        for v in store.ids(subset):
            a = store.read(v, ["times", "imageaudio"])
            segs = db[v]["annotations"]
            assert store.records(v)["imageaudio"].config["checkpoint_hash"] == student_hash
            for t, f in zip(a["times"], a["imageaudio"]):
                if any(s["segment"][0] <= t < s["segment"][1] for s in segs):
                    X.append(f.astype(np.float64))
                    y.append(classes.index(segs[0]["label"]))
        return np.array(X), np.array(y)

    Xtr, ytr = evidence("training")
    Xva, yva = evidence("validation")
    assert len(set(ytr)) == 3 and len(yva) >= 9
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    A = np.c_[(Xtr - mu) / sd, np.ones(len(Xtr))]
    W = np.linalg.solve(A.T @ A + 10 * np.eye(A.shape[1]), A.T @ np.eye(3)[ytr])
    accuracy = float(((np.c_[(Xva - mu) / sd, np.ones(len(Xva))] @ W).argmax(1) == yva).mean())
    assert accuracy >= 0.75, accuracy
