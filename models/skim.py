"""IMGAUD-SKIMMING: the network that previews a video's cheap per-moment features and picks the
moments worth looking at (docs/method.md section 3, supplementary D and G).

This file is the network, its factory and ``load_skim`` (the checkpoint ``train-skim``
writes): no data loading, no training loop (see ``training/skim.py``), no baselines or metrics
(see ``evaluation/``).

Shapes used throughout: B videos, N moments (padded), D = 512 feature size, H = 1024 LSTM size,
C classes, k steps actually run (k <= T).  Banks are float32 (B, N, D); ``mask`` is bool (B, N),
True on real moments.

Indexing variants (``SkimConfig.indexing``):

- ``"audiovisual"`` (the paper's model): banks ``image`` and ``audio``; one key and one query
  per modality; modality weights alpha = softmax(Linear(H, 2)(h)); next input
  x = Psi(sum_j W[j] B_I[j], sum_j W[j] B_A[j]) with W = alpha_0 w_I + alpha_1 w_A.
- ``"visual"`` (supplementary G.1): only the image bank is queried; the next image input is the
  soft-indexed image feature, the next audio input is the audio feature at argmax(w_I).
- ``"single"`` (supplementary D and G.2): one bank (``imageaudio`` for the single-query
  variant, or any one 512-d bank), one key, one query, no Psi; x = sum_j w[j] B[j].

Inference switches of ``SkimNet.forward``: ``steps`` (early stop after k steps), ``stride``
(only every s-th moment can be chosen, and only those were computed, so the start input is the
mean over them too), ``aggregated=False`` (use the argmax moments' own features instead of the
soft mixture) and ``recognition_bank`` (classify the chosen moments with ``recognizer`` on other
features and average the class probabilities).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F
from ..core.errors import ConfigError, L2LError
from .skim_keys import KeyScores, packed_linear
from .skim_interp import (interp_index, interpolate_bank, lerp_grid, lerp_rows,  # noqa: F401  (re-exported)
                          transpose_interp)

INDEXING = ("audiovisual", "visual", "single")
READOUTS = ("inputs", "outputs")
CHECKPOINT = "checkpoint.pt"          # what train-skim writes in its --out folder
FORMAT = "l2l-skim/1"


class SkimError(L2LError, RuntimeError):
    """A store, student or checkpoint that does not fit; the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class SkimConfig:
    num_classes: int
    indexing: str = "audiovisual"
    features: tuple[str, ...] = ("image", "audio")   # store arrays used as banks, in order
    steps: int = 10                                   # T
    dim: int = 512                                    # D
    hidden: int = 1024                                # H
    readout: str = "inputs"    # classifier averages x_0..x_{T-1} ("inputs") or x_1..x_T ("outputs")

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        if self.indexing not in INDEXING:
            raise ConfigError(f"indexing must be one of {INDEXING}, not {self.indexing!r}")
        want = 1 if self.indexing == "single" else 2
        if len(self.features) != want:
            raise ConfigError(f"indexing {self.indexing!r} needs {want} feature bank(s), "
                              f"got {list(self.features)}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, not {self.readout!r}")
        if self.steps < 1 or self.num_classes < 1:
            raise ConfigError("steps and num_classes must be >= 1")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SkimConfig":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class SkimOutput:
    logits: Tensor                  # (B, C) float; softmax gives the video-level prediction
    picks: dict[str, Tensor]        # queried bank name -> (B, k) int64 argmax moment per step
    weights: dict[str, Tensor]      # queried bank name -> (B, k, N) float soft-indexing weights
    alpha: Tensor | None            # (B, k, 2) modality weights ("audiovisual" only)
    inputs: Tensor                  # (B, k, D) what the classifier averages: x_0 .. x_{k-1}
                                    # (readout "inputs") or x_1 .. x_k ("outputs")


class Key(nn.Module):
    """K = ReLU(BN(Conv1x1(B))): (B, N, D) -> (B, N, D).  BN statistics come from real moments
    only (padded rows are packed out before the BN and come back as zeros)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=1)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, bank: Tensor, mask: Tensor) -> Tensor:
        """K as a tensor of the autograd graph; ``SkimNet`` uses ``KeyScores`` (same values,
        a leaner backward: ``models/skim_keys.py``)."""
        k = F.relu(self.bn(packed_linear(bank, mask, self.conv)))           # (M, D)
        return bank.new_zeros(bank.shape).index_put((mask,), k)


def query_mlp(hidden: int, dim: int) -> nn.Sequential:
    """Query(h): Linear(H, H), BN, ReLU, Linear(H, D)."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, dim))


class SkimNet(nn.Module):
    """IMGAUD-SKIMMING.  Build with ``build_skim``."""

    def __init__(self, config: SkimConfig, fusion: nn.Module | None, classifier: nn.Module,
                 recognizer: nn.Module | None = None):
        super().__init__()
        self.config = config
        D, H = config.dim, config.hidden
        n_query = 2 if config.indexing == "audiovisual" else 1
        self.keys = nn.ModuleList(Key(D) for _ in range(n_query))
        self.queries = nn.ModuleList(query_mlp(H, D) for _ in range(n_query))
        self.lstm = nn.LSTMCell(D, H)
        self.alpha = nn.Linear(H, 2) if config.indexing == "audiovisual" else None
        if (fusion is None) != (config.indexing == "single"):
            raise ValueError("Psi (fusion) is used by the two-bank variants and only by them")
        self.fusion = fusion
        self.classifier = classifier
        self.recognizer = recognizer

    @property
    def queried(self) -> tuple[str, ...]:
        """Names of the banks that are queried (and so have picks)."""
        return self.config.features[:len(self.keys)]

    def _fuse(self, parts: Sequence[Tensor]) -> Tensor:
        if self.fusion is None:
            return parts[0]
        return self.fusion(*parts)

    def forward(self, banks: Sequence[Tensor], mask: Tensor, *, steps: int | None = None,
                aggregated: bool = True, stride: int = 1, interpolate: bool = False,
                recognition_bank: Tensor | None = None,
                prekeys: Sequence[Tensor] | None = None) -> SkimOutput:
        """banks: one (B, N, D) float tensor per ``config.features``; mask: (B, N) bool, a
        prefix of each row.  Every video needs at least one real moment.  ``stride`` s > 1:
        only every s-th moment's features were computed; with ``interpolate`` the others are
        linear interpolations of their computed neighbours and every moment can be picked
        (the authors' ``--feature_interpolate``), else only the computed ones can.
        ``prekeys``: ``self.prekeys(banks, mask)`` of these banks (eval mode only), so that
        several runs on one batch share the keys' convolution.

        Interpolated features are never formed: in eval mode BN(Conv1x1(.)) is affine, so
        the keys are ReLU of the interpolated ``prekeys``, and the soft-indexed mixture of
        interpolated features is the computed moments' features under the interpolation's
        transposed weights (``interp_index``): the same values, up to rounding."""
        cfg = self.config
        k = cfg.steps if steps is None else int(steps)
        if len(banks) != len(cfg.features):
            raise ValueError(f"expected banks {list(cfg.features)}, got {len(banks)} tensor(s)")
        if not 1 <= k or stride < 1:
            raise ValueError("steps and stride must be >= 1")
        if stride > 1 and not interpolate:
            return self._strided(banks, mask, stride, steps=k, aggregated=aggregated,
                                 recognition_bank=recognition_bank, prekeys=prekeys)
        B, N = mask.shape
        pos = torch.arange(N, device=mask.device)
        computed = mask & (pos % stride == 0)                        # (B, N)
        if not bool(computed.any(1).all()):
            raise ValueError("every video needs at least one real moment")
        banks = [zero_outside(b, computed, prefix=stride == 1) for b in banks]
        n_valid = computed.sum(1, keepdim=True).to(banks[0].dtype)   # (B, 1)
        x = self._fuse([b.sum(1) / n_valid for b in banks])           # x_0: (B, D)
        valid = computed
        interp = interpolate and stride > 1
        if interp:
            lo, hi, frac = interp_index(mask, stride, banks[0].dtype)
            valid = mask
            if prekeys is None and not self.training:
                prekeys = self.prekeys(banks, computed)
        if prekeys is not None:
            if self.training:
                raise ValueError("prekeys are for eval mode (BatchNorm's running statistics)")
            # prekeys are zeros outside the mask they were made with, and lerp_rows outside
            # ``mask``: where both are ``valid``, ReLU alone gives the keys (in place on a new
            # tensor; each pass over (B, N, D) counts at evaluate's size)
            if interp:
                keys = [KeyScores.given(torch.relu_(lerp_grid(z, frac, mask, stride)))
                        for z in prekeys]
            else:
                keys = [KeyScores.given(torch.where(valid.unsqueeze(-1), torch.relu(z),
                                                    torch.zeros((), dtype=z.dtype, device=z.device)))
                        for z in prekeys]
        else:
            kb = [interpolate_bank(b, mask, stride) for b in banks[:len(self.keys)]] if interp \
                else banks
            keys = [KeyScores(key, kb[i], valid) for i, key in enumerate(self.keys)]

        def mix(w: Tensor, bank: Tensor) -> Tensor:         # sum_n w[n] * the bank read at n
            if interp:
                w = transpose_interp(w, lo, hi, frac, mask)
            return torch.einsum("bn,bnd->bd", w, bank)
        h = x.new_zeros(B, cfg.hidden)
        c = x.new_zeros(B, cfg.hidden)
        avail = [valid.clone() for _ in keys]
        xs, alphas = [x], []
        picks = {n: [] for n in self.queried}
        weights = {n: [] for n in self.queried}
        rows = torch.arange(B, device=mask.device)
        for t in range(k):
            h, c = self.lstm(x, (h, c))
            ws, js = [], []
            for m, (query, key) in enumerate(zip(self.queries, keys)):
                # a modality whose every real moment was picked (videos with < T moments)
                # may pick again: its mask is refilled
                spent = ~avail[m].any(1, keepdim=True)
                avail[m] = torch.where(spent, valid, avail[m])
                score = key.score(query(h), t) / math.sqrt(cfg.dim)
                w = torch.softmax(score.masked_fill(~avail[m], float("-inf")), dim=1)
                j = w.argmax(1)
                avail[m][rows, j] = False
                name = self.queried[m]
                picks[name].append(j)
                weights[name].append(w)
                ws.append(w if aggregated else F.one_hot(j, N).to(w.dtype))
                js.append(j)
            if t == k - 1 and cfg.readout == "inputs":
                break                                                 # x_k is not used
            if cfg.indexing == "audiovisual":
                a = torch.softmax(self.alpha(h), dim=1)               # (B, 2)
                alphas.append(a)
                W = a[:, :1] * ws[0] + a[:, 1:] * ws[1]               # (B, N)
                x = self._fuse([mix(W, b) for b in banks])
            elif cfg.indexing == "visual":
                own = mix(F.one_hot(js[0], N).to(ws[0].dtype), banks[1]) if interp \
                    else banks[1][rows, js[0]]
                x = self._fuse([mix(ws[0], banks[0]), own])
            else:
                x = mix(ws[0], banks[0])
            xs.append(x)
        if cfg.indexing == "audiovisual" and cfg.readout == "inputs":
            # alpha of the last step only weighs x_k, which is not used; report it anyway
            alphas.append(torch.softmax(self.alpha(h), dim=1))
        inputs = torch.stack(xs if cfg.readout == "inputs" else xs[1:], 1)   # (B, k, D)
        picks_t = {n: torch.stack(v, 1) for n, v in picks.items()}
        if recognition_bank is None:
            logits = self.classifier(inputs.mean(1))
        else:
            logits = self.recognize(recognition_bank, chosen_mask(picks_t, N))
        return SkimOutput(logits=logits, picks=picks_t,
                          weights={n: torch.stack(v, 1) for n, v in weights.items()},
                          alpha=torch.stack(alphas, 1) if alphas else None, inputs=inputs)

    def _strided(self, banks, mask, stride, *, steps, aggregated, recognition_bank, prekeys):
        """``forward`` with ``stride`` s > 1, not interpolated: only the computed moments
        (positions 0, s, 2s, ... of each video) can be picked or read, so the run is the
        stride-1 run on those moments alone (s times less to score and mix), its picks and
        weights put back at their positions.  The same method; sums and softmaxes run over
        the computed moments instead of all with zeros between, so the numbers agree with
        a run over every position to rounding."""
        sl = (slice(None), slice(None, None, stride))
        out = self.forward([b[sl] for b in banks], mask[sl], steps=steps, aggregated=aggregated,
                           recognition_bank=None if recognition_bank is None else recognition_bank[sl],
                           prekeys=None if prekeys is None else [z[sl] for z in prekeys])
        B, N = mask.shape
        weights = {}
        for n, w in out.weights.items():
            full = w.new_zeros(B, w.shape[1], N)
            full[:, :, ::stride] = w
            weights[n] = full
        return dataclasses.replace(out, picks={n: p * stride for n, p in out.picks.items()},
                                   weights=weights)

    @torch.no_grad()
    def prekeys(self, banks: Sequence[Tensor], mask: Tensor) -> list[Tensor]:
        """BN(Conv1x1(bank)) at the True positions of ``mask`` (zeros elsewhere), (B, N, D)
        for each queried bank: the keys before their ReLU, from which every inference run on
        these banks (any stride, interpolated or not) takes its keys.  Eval mode only."""
        if self.training:
            raise ValueError("prekeys are for eval mode (BatchNorm's running statistics)")
        out = []
        for key, bank in zip(self.keys, banks):
            z = bank.new_zeros(bank.shape)
            z[mask] = key.bn(packed_linear(bank, mask, key.conv))
            out.append(z)
        return out

    def readout(self, out: SkimOutput, k: int, recognition_bank: Tensor | None = None) -> Tensor:
        """Logits (B, C) of early stop after ``k`` steps, from the output of a longer run on
        the same inputs: exactly ``forward(..., steps=k).logits`` (the first k steps of a run do
        not depend on how many follow), so one pass gives every k of a trade-off curve."""
        if recognition_bank is None:
            return self.classifier(out.inputs[:, :k].contiguous().mean(1))
        picks = {n: p[:, :k].contiguous() for n, p in out.picks.items()}
        return self.recognize(recognition_bank, chosen_mask(picks, recognition_bank.shape[1]))

    def recognize(self, bank: Tensor, chosen: Tensor) -> Tensor:
        """Classify the chosen moments of ``bank`` (B, N, D_r) with ``recognizer`` and average
        the class probabilities over them; returns their log (B, C), so softmax gives back
        the average.  chosen: (B, N) bool."""
        if self.recognizer is None:
            raise ValueError("this skim model has no recognition classifier")
        probs = torch.softmax(self.recognizer(bank), dim=-1)         # (B, N, C)
        w = chosen.to(probs.dtype)
        mean = (probs * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)
        return torch.log(mean.clamp_min(1e-12))


def zero_outside(bank: Tensor, keep: Tensor, *, prefix: bool) -> Tensor:
    """``bank`` (B, N, D) with zeros wherever ``keep`` (B, N) is False.  ``prefix``: try the
    bank itself first: when its rows outside ``keep`` are zero already (as ``FeatureSet``
    pads) it is returned as it is, not copied (a training step's largest input).  Otherwise,
    or when such a row holds anything but zeros, a zero-filled copy."""
    if prefix and not bool((bank.any(-1) & ~keep).any()):     # (any: NaN counts as non-zero)
        return bank
    return torch.where(keep.unsqueeze(-1), bank, torch.zeros((), dtype=bank.dtype, device=bank.device))


def chosen_mask(picks: dict[str, Tensor], n: int) -> Tensor:
    """(B, N) bool: True at every moment picked by any step of any modality."""
    first = next(iter(picks.values()))
    out = torch.zeros(first.shape[0], n, dtype=torch.bool, device=first.device)
    for p in picks.values():
        out.scatter_(1, p, True)
    return out


def build_skim(*, num_classes: int, indexing: str = "audiovisual",
               features: Sequence[str] | None = None, steps: int = 10, readout: str = "inputs",
               fusion: nn.Module | None = None, classifier: nn.Module | None = None,
               recognizer: nn.Module | None = None, freeze_fusion: bool = True) -> SkimNet:
    """The skimming network.

    fusion / classifier: Psi (called as ``fusion(image, audio)``, like the student's
    ``Fusion``) and the classifier, normally the student's (``skim_from_student``); fresh ones
    of the same shapes when not given.  ``freeze_fusion``: Psi gets no gradient (the
    paper's setting).  features default to (image, audio), or (imageaudio,) for ``single``."""
    if features is None:
        features = ("imageaudio",) if indexing == "single" else ("image", "audio")
    config = SkimConfig(num_classes=num_classes, indexing=indexing, features=tuple(features),
                        steps=steps, readout=readout)
    if indexing == "single":
        fusion = None
    elif fusion is None:
        from l2l.models.students import Fusion
        fusion = Fusion(dim=config.dim)
    if classifier is None:
        classifier = nn.Linear(config.dim, num_classes)
    model = SkimNet(config, fusion, classifier, recognizer)
    if fusion is not None and freeze_fusion:
        for p in fusion.parameters():
            p.requires_grad_(False)
    return model


def skim_from_student(student: nn.Module, *, fresh_classifier: bool = False, **kwargs) -> SkimNet:
    """A skim model whose Psi and classifier are copies of a trained student's (attributes
    ``fusion`` and ``classifier``); Psi is frozen.  kwargs go to ``build_skim``.

    The student's classifier reads the image-audio embedding, so it is taken over whenever the
    skim model classifies in that space (two-bank variants, or ``single`` on ``imageaudio``);
    a single-bank model on another bank gets a fresh classifier, and so does any model with
    ``fresh_classifier`` (the authors' single-modality variant)."""
    import copy
    num_classes = student.classifier.out_features
    single = kwargs.get("indexing") == "single"
    fusion = None if single else copy.deepcopy(student.fusion)
    in_embedding = not single or tuple(kwargs.get("features") or ("imageaudio",)) == ("imageaudio",)
    classifier = copy.deepcopy(student.classifier) if in_embedding and not fresh_classifier else None
    return build_skim(num_classes=num_classes, fusion=fusion, classifier=classifier, **kwargs)


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when torch sees a device, else CPU; ``cuda`` without one: ``SkimError``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SkimError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def load_skim(path) -> tuple[SkimNet, dict]:
    """The skim model saved by ``train_skim`` (a file or its --out folder), in eval mode, and
    the checkpoint dict (config, train_config, classes, head, student, ...)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise SkimError(f"{path}: no skim checkpoint (train-skim writes {CHECKPOINT})")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SkimError(f"{path}: not a skim checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise SkimError(f"{path}: not a skim checkpoint (no {FORMAT} format tag)")
    cfg = SkimConfig.from_dict(ck["config"])
    recognizer = None
    if ck.get("recognizer"):
        recognizer = torch.nn.Linear(ck["recognizer"]["dim"], cfg.num_classes)
    model = build_skim(num_classes=cfg.num_classes, indexing=cfg.indexing,
                       features=cfg.features, steps=cfg.steps, readout=cfg.readout,
                       recognizer=recognizer)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise SkimError(f"{path}: weights do not fit its config ({str(e).splitlines()[0]})") from None
    ck["path"] = str(path)
    return model.eval(), ck
