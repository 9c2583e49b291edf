"""IMGAUD-SKIMMING network: size, masking, padding, the inference switches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from l2l.models.skim import build_skim, chosen_mask

D, H = 512, 1024


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def linear(i, o):
    return i * o + o


def expected_params(C: int) -> int:
    """The layer list of docs/method.md section 3, by arithmetic on the shapes."""
    key = (D * D * 1 + D) + 2 * D                      # Conv1x1(512->512) + BN(512) affine
    lstm = 4 * H * (D + H) + 2 * 4 * H                 # LSTMCell(512, 1024): W_ih, W_hh, b_ih, b_hh
    query = linear(H, H) + 2 * H + linear(H, D)        # Linear, BN(1024), ReLU, Linear
    alpha = linear(H, 2)
    psi = linear(2 * D, 2 * D) + linear(2 * D, D)
    classifier = linear(D, C)
    return 2 * key + lstm + 2 * query + alpha + psi + classifier


def banks(B=3, N=40, seed=0, n_banks=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, D, generator=g).relu() for _ in range(n_banks)]


def test_parameter_count_matches_method():
    for C in (200, 31):
        m = build_skim(num_classes=C)
        assert sum(p.numel() for p in m.parameters()) == expected_params(C)
    # Psi is frozen, the rest trains
    m = build_skim(num_classes=200)
    frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
    assert frozen == linear(2 * D, 2 * D) + linear(2 * D, D)


@pytest.mark.parametrize("indexing", ["audiovisual", "visual", "single"])
@pytest.mark.parametrize("train", [True, False])
def test_never_picks_a_moment_twice(indexing, train):
    torch.manual_seed(1)
    m = build_skim(num_classes=5, indexing=indexing).train(train)
    bs = banks(B=4, N=12, n_banks=1 if indexing == "single" else 2)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, 10:] = False                                # 10 real moments, T = 10: all of them
    out = m(bs, mask)
    for name, p in out.picks.items():
        assert p.shape == (4, 10)
        for b in range(4):
            assert len(set(p[b].tolist())) == 10, (name, b, p[b])
            assert mask[b, p[b]].all()


def test_padded_positions_get_no_weight_and_change_nothing():
    torch.manual_seed(2)
    m = build_skim(num_classes=7).eval()
    bi, ba = banks(B=2, N=30)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 17:] = False
    bi[0, 17:] = float("nan")                           # padding content must never be read
    ba[0, 17:] = 1e6
    out = m([bi, ba], mask)
    for w in out.weights.values():
        assert (w[0, :, 17:] == 0).all()
        assert torch.allclose(w.sum(-1), torch.ones(2, 10))
    assert torch.isfinite(out.logits).all()
    alone = m([bi[:1, :17], ba[:1, :17]], mask[:1, :17])
    assert torch.allclose(out.logits[0], alone.logits[0], atol=1e-5)
    assert torch.equal(out.picks["image"][0], alone.picks["image"][0])


def test_keys_ignore_padding_in_batchnorm_statistics():
    torch.manual_seed(3)
    m = build_skim(num_classes=3).train()
    bi, ba = banks(B=2, N=20)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 5:] = False
    m.keys[0](bi, mask)
    real = torch.cat([bi[0], bi[1, :5]])                # the 25 real moments
    conv = m.keys[0].conv
    y = real @ conv.weight[:, :, 0].t() + conv.bias
    expected = 0.9 * torch.zeros(D) + 0.1 * y.mean(0)   # BN momentum 0.1 from a zero start
    assert torch.allclose(m.keys[0].bn.running_mean, expected, atol=1e-5)


def test_unaggregated_uses_the_argmax_moments_own_features():
    torch.manual_seed(4)
    bi, ba = banks(B=3, N=25)
    mask = torch.ones(3, 25, dtype=torch.bool)
    rows = torch.arange(3)
    # single bank: x_{t+1} is exactly the picked moment's feature
    m = build_skim(num_classes=4, indexing="single").eval()
    out = m([bi], mask, aggregated=False)
    p = out.picks["imageaudio"]
    for t in range(9):
        assert torch.equal(out.inputs[:, t + 1], bi[rows, p[:, t]])
    # visual indexing: Psi(image at argmax w_I, audio at argmax w_I)
    m = build_skim(num_classes=4, indexing="visual").eval()
    out = m([bi, ba], mask, aggregated=False)
    j = out.picks["image"]
    with torch.no_grad():
        for t in range(9):
            want = m.fusion(bi[rows, j[:, t]], ba[rows, j[:, t]])
            assert torch.allclose(out.inputs[:, t + 1], want, atol=1e-6)
    # audio-visual: the alpha-weighted mix of the two argmax moments, for both banks
    m = build_skim(num_classes=4).eval()
    out = m([bi, ba], mask, aggregated=False)
    ji, ja, a = out.picks["image"], out.picks["audio"], out.alpha
    with torch.no_grad():
        for t in range(9):
            a0, a1 = a[:, t, :1], a[:, t, 1:]
            img = a0 * bi[rows, ji[:, t]] + a1 * bi[rows, ja[:, t]]
            aud = a0 * ba[rows, ji[:, t]] + a1 * ba[rows, ja[:, t]]
            assert torch.allclose(out.inputs[:, t + 1], m.fusion(img, aud), atol=1e-5)
    # and the aggregated path differs (it mixes every moment)
    agg = m([bi, ba], mask)
    assert not torch.allclose(agg.inputs[:, 1], out.inputs[:, 1])


def test_start_input_is_psi_of_the_means_and_prediction_the_mean_of_inputs():
    torch.manual_seed(5)
    m = build_skim(num_classes=6).eval()
    bi, ba = banks(B=2, N=15)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[1, 9:] = False
    out = m([bi, ba], mask)
    with torch.no_grad():
        x0 = m.fusion(bi[1, :9].mean(0, keepdim=True), ba[1, :9].mean(0, keepdim=True))
        assert torch.allclose(out.inputs[1, 0], x0[0], atol=1e-5)
        assert torch.allclose(out.logits, m.classifier(out.inputs.mean(1)), atol=1e-5)


def test_early_stop_and_subsampling():
    torch.manual_seed(6)
    m = build_skim(num_classes=5).eval()
    bi, ba = banks(B=2, N=64)
    mask = torch.ones(2, 64, dtype=torch.bool)
    full = m([bi, ba], mask)
    short = m([bi, ba], mask, steps=3)
    assert short.picks["image"].shape == (2, 3) and short.inputs.shape == (2, 3, D)
    assert torch.equal(short.picks["image"], full.picks["image"][:, :3])
    assert torch.equal(short.picks["audio"], full.picks["audio"][:, :3])
    assert torch.allclose(short.logits, m.classifier(full.inputs[:, :3].mean(1)), atol=1e-5)
    sub = m([bi, ba], mask, stride=4)
    for p in sub.picks.values():
        assert (p % 4 == 0).all()
    with torch.no_grad():      # the start input only sees the moments that were computed
        x0 = m.fusion(bi[:, ::4].mean(1), ba[:, ::4].mean(1))
    assert torch.allclose(sub.inputs[:, 0], x0, atol=1e-5)


def test_the_grid_interpolation_is_the_gathered_one_bit_for_bit():
    from l2l.models.skim_interp import interp_index, lerp_grid, lerp_rows
    torch.manual_seed(9)
    for N in (40, 41, 7):
        for s in (2, 3, 5, 8, 20):
            x = torch.randn(5, N, 16)
            mask = torch.zeros(5, N, dtype=torch.bool)
            for b, n in enumerate([N, N - 1, max(1, N // 3), 1, max(1, N - s - 1)]):
                mask[b, :n] = True
            lo, hi, frac = interp_index(mask, s)
            assert torch.equal(lerp_grid(x, frac, mask, s), lerp_rows(x, lo, hi, frac, mask)), (N, s)


def test_a_subsampled_run_reads_only_the_computed_moments():
    """Stride s without interpolation: moments off the grid 0, s, 2s, ... are neither read nor
    picked (noise there changes nothing), weights are zero there, and picks, weights and
    inputs keep the full length N, with videos of different lengths."""
    torch.manual_seed(8)
    m = build_skim(num_classes=5, steps=4).eval()
    bi, ba = banks(B=3, N=40, seed=8)
    mask = torch.ones(3, 40, dtype=torch.bool)
    for b, n in enumerate([40, 17, 6]):
        mask[b, n:] = False
        bi[b, n:] = 0
        ba[b, n:] = 0
    off = mask & (torch.arange(40) % 3 != 0)
    noisy = [torch.where(off.unsqueeze(-1), torch.randn_like(x) * 9, x) for x in (bi, ba)]
    with torch.no_grad():
        for kw in ({}, {"aggregated": False}):
            a, b = m([bi, ba], mask, stride=3, **kw), m(noisy, mask, stride=3, **kw)
            assert torch.equal(a.logits, b.logits) and torch.equal(a.inputs, b.inputs), kw
            for name in a.picks:
                assert torch.equal(a.picks[name], b.picks[name])
                assert (a.picks[name] % 3 == 0).all() and a.weights[name].shape == (3, 4, 40)
                assert torch.equal(a.weights[name], b.weights[name])
                assert not a.weights[name][:, :, off.any(0)].any()
                assert torch.allclose(a.weights[name].sum(-1), torch.ones(3, 4))
            pre = m.prekeys(noisy, mask)                         # shared keys: the same run
            c = m(noisy, mask, stride=3, prekeys=pre, **kw)
            assert torch.allclose(c.logits, a.logits, atol=1e-5)


def test_recognition_with_other_features_averages_the_chosen_moments():
    torch.manual_seed(7)
    rec = nn.Linear(D, 5)
    m = build_skim(num_classes=5, recognizer=rec).eval()
    bi, ba = banks(B=2, N=30)
    other = torch.randn(2, 30, D)
    mask = torch.ones(2, 30, dtype=torch.bool)
    out = m([bi, ba], mask, steps=3, recognition_bank=other)
    chosen = chosen_mask(out.picks, 30)
    with torch.no_grad():
        for b in range(2):
            idx = chosen[b].nonzero()[:, 0]
            assert set(idx.tolist()) == set(out.picks["image"][b].tolist()) | set(out.picks["audio"][b].tolist())
            want = torch.softmax(rec(other[b, idx]), -1).mean(0)
            assert torch.allclose(torch.softmax(out.logits[b], -1), want, atol=1e-5)


def test_gradients_reach_indexing_but_not_psi():
    torch.manual_seed(8)
    m = build_skim(num_classes=4).train()
    bi, ba = banks(B=4, N=20)
    mask = torch.ones(4, 20, dtype=torch.bool)
    out = m([bi, ba], mask)
    nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is None for p in m.fusion.parameters())
    for mod in (m.keys[0].conv, m.keys[1].conv, m.queries[0][0], m.queries[1][0], m.alpha, m.classifier):
        assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("readout", ["inputs", "outputs"])
def test_lean_key_backward_equals_plain_autograd(readout):
    """The training step's key path (models/skim_keys.py: packed product, ReLU-scatter keeping
    only K, the steps' key gradients summed in one product) gives plain autograd's gradients,
    the same forward bits, and updates BN's running statistics once."""
    import copy
    torch.manual_seed(9)
    m = build_skim(num_classes=5, steps=4, readout=readout).train()
    m.fusion.eval()
    plain = copy.deepcopy(m)
    bi, ba = banks(B=5, N=30, seed=3)
    mask = torch.ones(5, 30, dtype=torch.bool)
    for b, n in enumerate([30, 7, 19, 4, 25]):
        mask[b, n:] = False
        bi[b, n:] = 0
        ba[b, n:] = 0
    y = torch.tensor([0, 1, 2, 3, 4])
    lean_out = m([bi, ba], mask)                        # banks need no gradient: lean path
    nn.functional.cross_entropy(lean_out.logits, y).backward()
    ref_out = plain([bi.requires_grad_(), ba.requires_grad_()], mask)   # plain autograd
    nn.functional.cross_entropy(ref_out.logits, y).backward()
    assert torch.equal(lean_out.logits, ref_out.logits)
    assert torch.equal(lean_out.picks["image"], ref_out.picks["image"])
    for (name, a), b in zip(m.named_parameters(), plain.parameters()):
        if a.grad is None:
            assert b.grad is None, name
            continue
        assert a.grad.abs().sum() > 0, name
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    for a, b in zip(m.buffers(), plain.buffers()):
        assert torch.equal(a, b)
    assert m.keys[0].bn.num_batches_tracked == 1


def test_shared_prekeys_and_transposed_interpolation_equal_the_direct_computation():
    """evaluate's skim pass computes the keys' convolution once per batch (``prekeys``) and
    never forms interpolated features: the keys are ReLU of the interpolated pre-keys, and the
    mixture uses the interpolation's transposed weights.  Both equal the direct computation."""
    from l2l.models.skim import interp_index, interpolate_bank, lerp_rows, transpose_interp
    from l2l.models.skim_keys import KeyScores
    torch.manual_seed(10)
    m = build_skim(num_classes=6, steps=5).eval()
    bi, ba = banks(B=4, N=33, seed=4)
    mask = torch.ones(4, 33, dtype=torch.bool)
    for b, n in enumerate([33, 12, 5, 21]):
        mask[b, n:] = False
        bi[b, n:] = 0
        ba[b, n:] = 0
    with torch.no_grad():
        pre = m.prekeys([bi, ba], mask)
        for stride in (2, 5):
            lo, hi, frac = interp_index(mask, stride)
            direct = KeyScores(m.keys[0], interpolate_bank(bi, mask, stride), mask).k
            assert torch.allclose(torch.relu(lerp_rows(pre[0], lo, hi, frac, mask)), direct,
                                  atol=1e-5)
            w = torch.rand(4, 33)
            assert torch.allclose(torch.einsum("bn,bnd->bd", transpose_interp(w, lo, hi, frac, mask), bi),
                                  torch.einsum("bn,bnd->bd", w * mask, interpolate_bank(bi, mask, stride)),
                                  atol=1e-4)
        for kw in ({}, {"stride": 4}, {"stride": 4, "interpolate": True}, {"aggregated": False},
                   {"stride": 3, "interpolate": True, "aggregated": False}):
            shared, alone = m([bi, ba], mask, prekeys=pre, **kw), m([bi, ba], mask, **kw)
            assert torch.allclose(shared.logits, alone.logits, atol=1e-5), kw
            assert torch.equal(shared.picks["audio"], alone.picks["audio"]), kw
    with pytest.raises(ValueError, match="eval mode"):
        m.train()([bi, ba], mask, prekeys=pre)


def test_skim_from_student_takes_psi_and_classifier():
    from l2l.models.skim import skim_from_student
    from l2l.models.students import build_student
    st = build_student(num_classes=9)
    m = skim_from_student(st, steps=4)
    assert m.config.num_classes == 9 and m.config.steps == 4
    assert torch.equal(m.classifier.weight, st.classifier.weight)
    for a, b in zip(m.fusion.parameters(), st.fusion.parameters()):
        assert torch.equal(a, b) and not a.requires_grad
    single = skim_from_student(st, indexing="single", features=("image",))
    assert single.fusion is None and not torch.equal(single.classifier.weight, st.classifier.weight)


def test_bad_configs_fail_clearly():
    with pytest.raises(ValueError, match="needs 1 feature"):
        build_skim(num_classes=3, indexing="single", features=("image", "audio"))
    with pytest.raises(ValueError, match="indexing must be"):
        build_skim(num_classes=3, indexing="both")
    m = build_skim(num_classes=3)
    with pytest.raises(ValueError, match="expected banks"):
        m([torch.zeros(1, 4, D)], torch.ones(1, 4, dtype=torch.bool))


def test_interpolated_index_lets_every_moment_be_picked():
    """The authors' --feature_interpolate: with stride s only every s-th moment is computed,
    the others are linear interpolations of their computed neighbours (exact at the computed
    ones, copies of the last computed one past it), and any moment can be picked."""
    from l2l.models.skim import interpolate_bank
    bank = torch.arange(2 * 10, dtype=torch.float32).view(2, 10, 1).expand(2, 10, 3).clone()
    bank[1] = bank[1] ** 2
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False                                   # video 1 has 7 moments
    out = interpolate_bank(bank, mask, 3)
    # video 0: computed 0, 3, 6, 9 -> linear in between equals the original ramp
    assert torch.allclose(out[0, :, 0], bank[0, :, 0])
    # video 1: computed 0, 3, 6 (values 100, 169, 256); 1 = 100 + (169 - 100) / 3
    assert out[1, 1, 0] == pytest.approx(100 + 69 / 3) and out[1, 6, 0] == 256
    assert (out[1, 7:] == 0).all()                        # padding stays zero
    torch.manual_seed(8)
    m = build_skim(num_classes=4, steps=6).eval()
    bi, ba = banks(B=2, N=40, seed=3)
    full_mask = torch.ones(2, 40, dtype=torch.bool)
    plain = m([bi, ba], full_mask, stride=4)
    interp = m([bi, ba], full_mask, stride=4, interpolate=True)
    assert torch.allclose(interp.inputs[:, 0], plain.inputs[:, 0], atol=1e-5)  # same start
    picks = torch.cat([p.flatten() for p in interp.picks.values()])
    assert (picks % 4 != 0).any()                         # a skipped moment was picked
    w = interp.weights["image"]
    assert (w[:, 0, 1::4] > 0).all()                      # skipped moments get weight


def test_readout_outputs_averages_x1_to_xT():
    """readout="outputs" (the authors' code): the classifier averages x_1..x_T, each the soft
    index of one step; "inputs" (default) averages x_0..x_{T-1}."""
    torch.manual_seed(9)
    a = build_skim(num_classes=5, steps=4).eval()
    b = build_skim(num_classes=5, steps=4, readout="outputs").eval()
    b.load_state_dict(a.state_dict())
    bi, ba = banks(B=2, N=20, seed=4)
    mask = torch.ones(2, 20, dtype=torch.bool)
    oa, ob = a([bi, ba], mask), b([bi, ba], mask)
    assert torch.equal(oa.picks["image"], ob.picks["image"])
    assert torch.allclose(ob.inputs[:, :3], oa.inputs[:, 1:], atol=1e-5)    # x_1..x_3 shared
    assert ob.inputs.shape == oa.inputs.shape == (2, 4, D)
    assert torch.allclose(ob.logits, b.classifier(ob.inputs.mean(1)), atol=1e-5)
    assert not torch.allclose(oa.logits, ob.logits)
    with pytest.raises(ValueError, match="readout"):
        build_skim(num_classes=5, readout="last")


def test_fresh_classifier_from_a_student():
    from l2l.models.skim import skim_from_student
    from l2l.models.students import build_student
    st = build_student(num_classes=9)
    kept = skim_from_student(st, indexing="single")
    fresh = skim_from_student(st, indexing="single", fresh_classifier=True)
    assert torch.equal(kept.classifier.weight, st.classifier.weight)
    assert not torch.equal(fresh.classifier.weight, st.classifier.weight)
    assert fresh.classifier.out_features == 9
