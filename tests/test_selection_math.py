"""Selection math against hand-computed values (method.md sections 2-4)."""

import math

import pytest
import torch

from llkd.selection.thresholds import (
    AdaptiveThreshold,
    above_threshold,
    batch_means,
    batch_sums,
    class_thresholds,
    ema_update,
    init_levels,
    loss_weights,
    normalized_entropy,
    weighted_cross_entropy,
)


def test_normalized_entropy_bounds_and_value():
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    u = normalized_entropy(p)
    assert u[0].item() == pytest.approx(0.0, abs=1e-6)
    assert u[1].item() == pytest.approx(1.0, abs=1e-6)
    assert u[2].item() == pytest.approx(math.log(2) / math.log(4), abs=1e-6)  # = 0.5


def test_batch_means_and_absent_class():
    s = torch.tensor([0.9, 0.7, 0.4])
    y = torch.tensor([0, 0, 2])
    mean, cm, present = batch_means(batch_sums(s, y, 3), 3)
    assert mean == pytest.approx(2.0 / 3)
    assert cm.tolist() == pytest.approx([0.8, 0.0, 0.4])
    assert present.tolist() == [True, False, True]


def test_first_batch_initialisation_fills_absent_class_with_global_mean():
    g, m = init_levels(0.6, torch.tensor([0.8, 0.0, 0.4], dtype=torch.float64), torch.tensor([True, False, True]))
    assert g == pytest.approx(0.6)
    assert m.tolist() == pytest.approx([0.8, 0.6, 0.4])


def test_ema_update_hand_computed_and_absent_class_keeps_value():
    g, m = ema_update(0.6, torch.tensor([0.8, 0.6, 0.4], dtype=torch.float64), 0.2, torch.tensor([0.1, 0.0, 0.3], dtype=torch.float64), torch.tensor([True, False, True]), momentum=0.9)
    assert g == pytest.approx(0.9 * 0.6 + 0.1 * 0.2)  # 0.56
    assert m.tolist() == pytest.approx([0.9 * 0.8 + 0.1 * 0.1, 0.6, 0.9 * 0.4 + 0.1 * 0.3])  # [0.73, 0.6, 0.39]


def test_class_thresholds_modulation():
    tau = class_thresholds(0.56, torch.tensor([0.73, 0.6, 0.39], dtype=torch.float64))
    assert tau.tolist() == pytest.approx([0.56, 0.56 * 0.6 / 0.73, 0.56 * 0.39 / 0.73])
    assert class_thresholds(0.5, torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_mask_uses_each_samples_class_threshold():
    s = torch.tensor([0.5, 0.5, 0.2])
    y = torch.tensor([0, 1, 1])
    tau = torch.tensor([0.6, 0.4])
    assert above_threshold(s, y, tau).tolist() == [False, True, False]


def test_loss_weights_normalised_to_mean_one_on_selection():
    mask = torch.tensor([True, False, True, True])
    c = torch.tensor([0.9, 0.99, 0.6, 0.3])
    u = torch.tensor([0.5, 0.1, 0.5, 1.0])
    w = loss_weights(mask, c, u)
    raw = torch.tensor([0.45, 0.0, 0.30, 0.30])
    assert w.tolist() == pytest.approx((raw * 3 / raw.sum()).tolist(), abs=1e-6)
    assert w[mask].mean().item() == pytest.approx(1.0)
    assert w[1].item() == 0.0


def test_empty_selection_gives_zero_weights():
    mask = torch.zeros(3, dtype=torch.bool)
    w = loss_weights(mask, torch.ones(3), torch.ones(3))
    assert w.tolist() == [0.0, 0.0, 0.0]


def test_weighted_cross_entropy_matches_formula():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    w = torch.tensor([1.5, 0.5])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert weighted_cross_entropy(logits, targets, w).item() == pytest.approx(((1.5 * ce[0] + 0.5 * ce[1]) / 2).item())


def test_adaptive_threshold_over_three_batches_and_state_roundtrip():
    th = AdaptiveThreshold(num_classes=2, momentum=0.5)
    # batch 1 initialises: g = 0.6, class 0 mean 0.6, class 1 absent -> starts at g
    tau1 = th.update(torch.tensor([0.8, 0.4]), torch.tensor([0, 0]))
    assert th.global_level == pytest.approx(0.6)
    assert th.class_level.tolist() == pytest.approx([0.6, 0.6])
    assert tau1.tolist() == pytest.approx([0.6, 0.6])
    # batch 2: only class 1 (mean 1.0) -> g = 0.5*0.6+0.5*1.0 = 0.8; m = [0.6, 0.8]
    tau2 = th.update(torch.tensor([1.0]), torch.tensor([1]))
    assert th.global_level == pytest.approx(0.8)
    assert th.class_level.tolist() == pytest.approx([0.6, 0.8])
    assert tau2.tolist() == pytest.approx([0.8 * 0.6 / 0.8, 0.8])
    saved = th.state_dict()
    other = AdaptiveThreshold(num_classes=2, momentum=0.5)
    other.load_state_dict(saved)
    a = th.update(torch.tensor([0.2, 0.4]), torch.tensor([0, 1]))
    b = other.update(torch.tensor([0.2, 0.4]), torch.tensor([0, 1]))
    assert a.tolist() == pytest.approx(b.tolist())
    # batch 3: g = 0.5*0.8 + 0.5*0.3 = 0.55; m = [0.5*0.6+0.5*0.2, 0.5*0.8+0.5*0.4] = [0.4, 0.6]
    assert th.global_level == pytest.approx(0.55)
    assert a.tolist() == pytest.approx([0.55 * 0.4 / 0.6, 0.55])


def test_constant_initialisation_blends_first_batch():
    th = AdaptiveThreshold(num_classes=2, momentum=0.9, init="constant", init_value=0.5)
    th.update(torch.tensor([1.0, 1.0]), torch.tensor([0, 1]))
    assert th.global_level == pytest.approx(0.55)
    assert th.class_level.tolist() == pytest.approx([0.55, 0.55])


def test_loss_count_makes_ddp_average_the_whole_batch_mean():
    """Two processes with 1 and 3 selected rows: scaling each share's loss by world / |S|
    makes DDP's average of the two equal the one-process mean over all 4 rows."""
    import torch

    from llkd.selection.thresholds import weighted_cross_entropy, weighted_soft_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.5, 0.1], [0.0, 1.0], [1.0, 1.5]])
    targets, weights = torch.tensor([0, 1, 1, 0]), torch.tensor([1.0, 0.5, 0.8, 0.3])
    whole = weighted_cross_entropy(logits, targets, weights)
    shares = [weighted_cross_entropy(logits[s], targets[s], weights[s], count=4 / 2) for s in (slice(0, 1), slice(1, 4))]
    assert float(sum(shares) / 2) == pytest.approx(float(whole))
    # one selected row over two processes: a fractional share of |S| (0.5), not clipped to 1
    one = weighted_cross_entropy(logits[:1], targets[:1], weights[:1], count=0.5)
    assert float(one / 2) == pytest.approx(float(weighted_cross_entropy(logits[:1], targets[:1], weights[:1])))
    q = torch.softmax(torch.tensor([[0.3, 0.1], [0.0, 2.0], [1.0, 0.0], [0.2, 0.2]]), dim=-1)
    whole = weighted_soft_cross_entropy(logits, q, weights)
    shares = [weighted_soft_cross_entropy(logits[s], q[s], weights[s], count=2.0) for s in (slice(0, 1), slice(1, 4))]
    assert float(sum(shares) / 2) == pytest.approx(float(whole))
