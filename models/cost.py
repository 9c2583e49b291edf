"""Model cost in FLOPs, measured by running the model under ``torch.utils.flop_counter``.

What is here: ``flops`` (one call of any module on given input shapes) and ``flops_per_moment``
(each IMGAUD2VID model on one moment's inputs), both counted on the ``meta`` device so no
arithmetic is actually done.  What is not: hand-derived counts, or the per-video cost formula of
the evaluation (that multiplies these figures by moment counts, in ``evaluation``).

Units: ``flops``/``flops_per_moment`` give FLOPs as torch's counter reports them (a multiply-add
is 2 FLOPs; convolutions and matrix products only, not normalisation or activations);
``macs``/``macs_per_moment`` give multiply-adds (FLOPs / 2), the paper's unit.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def flops(model: nn.Module, *input_shapes: tuple[int, ...], dtype=torch.float32) -> int:
    """FLOPs of ``model(*inputs)`` for inputs of ``input_shapes``, counted on the meta device
    (``model`` itself is not changed; a meta copy is run in eval mode)."""
    meta = copy.deepcopy(model).to("meta").eval()
    inputs = [torch.empty(s, dtype=dtype, device="meta") for s in input_shapes]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(*inputs)
    return int(counter.get_total_flops())


def flops_per_moment(student: nn.Module | None = None, *, teacher: bool = True,
                     num_classes: int | None = None) -> dict[str, int]:
    """FLOPs of each model on one moment's inputs: ``image_trunk`` (1x3x112x112),
    ``audio_trunk`` (1x1x101x40), ``fusion`` (1x1024 -> 512), ``classifier`` (512 -> C) and,
    when ``teacher``, the R(2+1)D-18 ``teacher`` (1x3x16x112x112), plus ``image_audio`` (the sum
    of image trunk, audio trunk and fusion: one moment's index features).

    ``student``: a ``StudentNet`` (a fresh one is built on the meta device if None, with
    ``num_classes`` classes, default 400)."""
    from l2l.models.students import LOGMEL_SHAPE, build_student
    if student is None:
        with torch.device("meta"):
            student = build_student(num_classes=num_classes or 400)
    out = {
        "image_trunk": flops(student.image_trunk, (1, 3, 112, 112)),
        "audio_trunk": flops(student.audio_trunk, (1, 1, *LOGMEL_SHAPE)),
        "fusion": flops(student.fusion, (1, 512), (1, 512)),
        "classifier": flops(student.classifier, (1, 512)),
    }
    out["image_audio"] = out["image_trunk"] + out["audio_trunk"] + out["fusion"]
    if teacher:
        from l2l.models.teacher import teacher as build_teacher
        with torch.device("meta"):
            t = build_teacher(weights=None)
        out["teacher"] = flops(t, (1, 3, 16, 112, 112))
    return out


def macs(model: nn.Module, *input_shapes: tuple[int, ...], dtype=torch.float32) -> float:
    """Multiply-adds of ``model(*inputs)``: ``flops`` / 2, the unit the paper (and torchvision's
    40.5 GFLOPs for R(2+1)D-18) calls FLOPs."""
    return flops(model, *input_shapes, dtype=dtype) / 2


def macs_per_moment(student: nn.Module | None = None, *, teacher: bool = True,
                    num_classes: int | None = None) -> dict[str, float]:
    """``flops_per_moment`` in multiply-adds (each value / 2)."""
    return {k: v / 2 for k, v in flops_per_moment(student, teacher=teacher,
                                                  num_classes=num_classes).items()}
