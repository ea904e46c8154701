"""Each selector's behaviour on hand-made batches."""

import numpy as np
import pytest
import torch

from llkd.config import SelectionConfig
from llkd.selection import SELECTORS, SelectionBatch, build_selector


def batch(teacher_probs, student_probs=None, indices=None):
    tp = torch.tensor(teacher_probs)
    return SelectionBatch(
        indices=torch.tensor(indices if indices is not None else list(range(len(tp)))),
        pseudo_labels=tp.argmax(1),
        teacher_probs=tp,
        student_probs=None if student_probs is None else torch.tensor(student_probs),
    )


# Two classes. Teacher confidences 0.9, 0.6 (class 0) and 0.8, 0.7 (class 1).
TEACHER = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]
# Student: sure, unsure, unsure, sure.
STUDENT = [[0.99, 0.01], [0.5, 0.5], [0.5, 0.5], [0.01, 0.99]]


def make(name, **kw):
    return build_selector(SelectionConfig(selector=name, **kw), num_classes=2, pool_size=10, seed=0)


def test_registry_has_every_method_of_the_spec():
    assert set(SELECTORS.names()) >= {"all", "soft", "random", "fixed", "teacher_adaptive", "student_adaptive", "freematch", "llkd"}
    with pytest.raises(KeyError, match="unknown selector 'nope'"):
        SELECTORS.get("nope")


def test_all_and_soft_keep_everything():
    for name in ("all", "soft"):
        sel = make(name).select(batch(TEACHER))
        assert sel.mask.all() and sel.weights.tolist() == [1.0] * 4
    assert make("soft").soft_targets and not make("all").soft_targets
    assert not make("all").needs_student


def test_soft_targets_option_switches_any_selector_to_the_teacher_distribution():
    plain, soft = make("llkd"), make("llkd", soft_targets=True)
    assert soft.soft_targets and not plain.soft_targets and not make("llkd").soft_targets  # instance, not class, setting
    # the selection itself is unchanged
    a, b = plain.select(batch(TEACHER, STUDENT)), soft.select(batch(TEACHER, STUDENT))
    assert a.mask.tolist() == b.mask.tolist() and torch.allclose(a.weights, b.weights)


def test_fixed_threshold():
    sel = make("fixed", fixed_threshold=0.75).select(batch(TEACHER))
    assert sel.mask.tolist() == [True, False, True, False]


def test_random_is_a_fixed_subset_of_the_pool():
    s = make("random", keep_rate=0.3)
    assert int(s.keep.sum()) == 3
    first = s.select(batch(TEACHER * 2 + TEACHER[:2], indices=list(range(10)))).mask
    again = s.select(batch(TEACHER * 2 + TEACHER[:2], indices=list(range(10)))).mask
    assert first.tolist() == again.tolist() == s.keep.tolist()
    other_seed = build_selector(SelectionConfig(selector="random", keep_rate=0.3), 2, 10, seed=1)
    assert other_seed.keep.sum() == 3


def test_teacher_adaptive_first_batch():
    # first batch: g = mean c = 0.75; m = [0.75, 0.75] -> tau = [0.75, 0.75]
    sel = make("teacher_adaptive").select(batch(TEACHER))
    assert sel.mask.tolist() == [True, False, True, False]
    assert sel.stats["teacher_threshold"] == pytest.approx([0.75, 0.75])
    # weights = c normalised to mean 1 over the kept pair (0.9, 0.8)
    assert sel.weights.tolist() == pytest.approx([0.9 / 0.85, 0, 0.8 / 0.85, 0])


def test_student_adaptive_first_batch():
    s = make("student_adaptive")
    assert s.needs_student
    sel = s.select(batch(TEACHER, STUDENT))
    # u ~ [0.08, 1, 1, 0.08]; class 0 mean 0.54, class 1 mean 0.54 -> tau ~ 0.54 each
    assert sel.mask.tolist() == [False, True, True, False]


def test_llkd_needs_both_conditions_and_weights_c_times_u():
    s = make("llkd")
    sel = s.select(batch(TEACHER, STUDENT))
    # teacher keeps 0 and 2; student keeps 1 and 2 -> only sample 2 (confident teacher, unsure student)
    assert sel.mask.tolist() == [False, False, True, False]
    assert sel.weights.tolist() == pytest.approx([0, 0, 1.0, 0])
    assert set(sel.stats) >= {"teacher_threshold", "student_threshold"}


def test_llkd_weights_unweighted_flag():
    # Constant init at 0 keeps every sample, so the weights alone are compared.
    kw = dict(init="constant", init_value=0.0, momentum=0.99)
    weighted = make("llkd-paper", **kw).select(batch(TEACHER, STUDENT))
    plain = make("llkd-paper", weighted=False, **kw).select(batch(TEACHER, STUDENT))
    assert weighted.mask.all() and plain.mask.all()
    assert plain.weights.tolist() == [1.0] * 4
    assert weighted.weights.mean().item() == pytest.approx(1.0)
    assert weighted.weights[2] > weighted.weights[0]  # c*u: 0.8*1 vs 0.9*0.08


def test_llkd_empty_selection():
    s = make("llkd")
    sure = [[0.999, 0.001]] * 4
    sel = s.select(batch(TEACHER, sure))
    # every student uncertainty is equal, so all reach tau = g * 1; teacher keeps 2 of 4
    assert sel.mask.sum() == 2
    s2 = make("llkd-paper", init="constant", init_value=1.0, momentum=0.99)  # EMA: the constant init holds
    sel2 = s2.select(batch(TEACHER, sure))
    assert not sel2.mask.any() and sel2.weights.sum() == 0


def test_llkd_state_dict_roundtrip():
    a = make("llkd")
    a.select(batch(TEACHER, STUDENT))
    b = make("llkd")
    b.load_state_dict(a.state_dict())
    x = a.select(batch(TEACHER[::-1], STUDENT))
    y = b.select(batch(TEACHER[::-1], STUDENT))
    assert x.mask.tolist() == y.mask.tolist() and x.stats == y.stats


def test_freematch_uses_student_confidence_and_prediction():
    s = make("freematch")
    student = [[0.99, 0.01], [0.6, 0.4], [0.45, 0.55], [0.02, 0.98]]
    sel = s.select(batch(TEACHER, student))
    # confidence [0.99, 0.6, 0.55, 0.98], classes from the student [0, 0, 1, 1]:
    # g = 0.78, m = [0.795, 0.765] -> tau = [0.78, 0.78 * 0.765 / 0.795]
    assert sel.stats["student_threshold"] == pytest.approx([0.78, 0.78 * 0.765 / 0.795])
    assert sel.mask.tolist() == [True, False, False, True]


# -- LLKD variants (method.md 8) -------------------------------------------------------------
def test_label_uncertainty_picks_a_confident_student_that_disagrees():
    from llkd.selection.thresholds import label_uncertainty

    # teacher says class 0 for all; the student is sure of class 1 on row 0, of class 0 on row 1
    probs = torch.tensor([[0.02, 0.98], [0.98, 0.02], [0.5, 0.5]])
    u = label_uncertainty(probs, torch.tensor([0, 0, 0]))
    assert torch.allclose(u, torch.tensor([0.98, 0.02, 0.5]))
    # entropy calls rows 0 and 1 equally certain; label uncertainty separates them
    teacher = [[0.9, 0.1]] * 3
    paper = make("llkd-paper").select(batch(teacher, probs.tolist()))
    variant = make("llkd", student_signal="label_uncertainty").select(batch(teacher, probs.tolist()))
    assert paper.mask.tolist()[:2] == [False, False]
    assert variant.mask.tolist() == [True, False, True]


def test_llkd_paper_ignores_variant_options():
    opts = {"student_signal": "label_uncertainty", "student_threshold": "batch", "class_balance": "selected_share", "min_per_step": 4}
    a = make("llkd-paper", **opts)
    b = make("llkd-paper")
    for _ in range(3):
        sa, sb = a.select(batch(TEACHER, STUDENT)), b.select(batch(TEACHER, STUDENT))
        assert sa.mask.tolist() == sb.mask.tolist() and torch.allclose(sa.weights, sb.weights)


def test_batch_student_threshold_does_not_lag():
    """After a fall in uncertainty, the EMA threshold stays above every sample (nothing is
    selected); the batch threshold follows the batch."""
    teacher = [[0.9, 0.1], [0.1, 0.9]] * 2
    high = [[0.5, 0.5]] * 4
    low = [[0.9, 0.1], [0.1, 0.9], [0.85, 0.15], [0.15, 0.85]]
    ema, now = make("llkd-paper", momentum=0.9), make("llkd", student_threshold="batch")
    for sel in (ema, now):
        sel.select(batch(teacher, high))
    assert not ema.select(batch(teacher, low)).mask.any()
    assert now.select(batch(teacher, low)).mask.any()


def test_min_per_step_tops_up_with_the_best_scores():
    from llkd.selection.thresholds import top_up

    mask = torch.tensor([False, True, False, False])
    score = torch.tensor([0.3, 0.9, 0.8, 0.1])
    assert top_up(mask, score, 3).tolist() == [True, True, True, False]
    assert top_up(mask, score, 1).tolist() == mask.tolist()
    sel = make("llkd", min_per_step=3).select(batch(TEACHER, STUDENT))
    assert int(sel.mask.sum()) >= 3 and sel.stats["topped_up"] >= 0


def test_class_balance_downweights_the_dominant_class():
    from llkd.selection.thresholds import balance_multipliers, update_class_share

    share = update_class_share(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0]), momentum=0.0)
    assert torch.allclose(share, torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.allclose(balance_multipliers(share), torch.tensor([2 / 3, 2.0], dtype=torch.float64))
    # a step with no selection keeps the share
    assert torch.equal(update_class_share(share, torch.zeros(2), 0.5), share)
    # three class-0 rows and one class-1 row, all selected (min_per_step): class 1 weighs more
    teacher = [[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.1, 0.9]]
    student = [[0.5, 0.5]] * 4
    sel = make("llkd", class_balance="selected_share", momentum=0.0, min_per_step=4, weighted=False).select(batch(teacher, student))
    assert sel.mask.all()
    assert sel.weights[3] > sel.weights[0] and sel.weights.mean() == pytest.approx(1.0)
    state = make("llkd", class_balance="selected_share").state_dict()
    assert "class_share" in state


def test_class_balance_aims_at_the_estimated_prior():
    from llkd.selection.thresholds import balance_multipliers

    share = torch.tensor([0.75, 0.25], dtype=torch.float64)
    # the pool is 3:1: a selected set of 3:1 is on target, nothing is reweighted
    assert torch.allclose(balance_multipliers(share, torch.tensor([0.75, 0.25], dtype=torch.float64)), torch.ones(2, dtype=torch.float64))
    # three class-0 rows and one class-1 row, all selected: with a 3:1 prior the weights stay
    # equal; with the uniform target (the old guard) class 1 weighs three times class 0
    teacher = [[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.1, 0.9]]
    student = [[0.5, 0.5]] * 4
    opts = {"class_balance": "selected_share", "momentum": 0.0, "min_per_step": 4, "weighted": False}
    prior = build_selector(SelectionConfig(selector="llkd", **opts), 2, 10, 0, class_prior=np.array([0.75, 0.25])).select(batch(teacher, student))
    assert torch.allclose(prior.weights, torch.ones(4))
    uniform = build_selector(SelectionConfig(selector="llkd", class_balance_target="uniform", **opts), 2, 10, 0,
                             class_prior=np.array([0.75, 0.25])).select(batch(teacher, student))
    assert uniform.weights[3] / uniform.weights[0] == pytest.approx(3.0)
    # the guard's EMA starts at its target, so the first step is not reweighted by the start value
    assert build_selector(SelectionConfig(selector="llkd"), 2, 10, 0, class_prior=np.array([0.75, 0.25])).state_dict()["class_share"] == pytest.approx([0.75, 0.25])
    # llkd-paper ignores the guard, whatever the prior
    paper = build_selector(SelectionConfig(selector="llkd-paper", **opts), 2, 10, 0, class_prior=np.array([0.9, 0.1])).select(batch(teacher, student))
    assert "class_share" not in paper.stats


def test_global_teacher_threshold_holds_a_weak_class_to_the_global_level():
    # class 0 answered with confidence 0.9/0.8, class 1 (the weak class) with 0.6/0.55:
    # g = 0.7125, m = [0.85, 0.575]; class-wise tau(1) = g * 0.575 / 0.85 = 0.48 keeps both
    # class-1 rows, the global bar (0.7125) keeps neither.
    teacher = [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55]]
    classwise = make("teacher_adaptive").select(batch(teacher))
    flat = make("teacher_adaptive", teacher_threshold="global").select(batch(teacher))
    assert classwise.mask.tolist() == [True, True, True, True]
    assert flat.mask.tolist() == [True, True, False, False]
    assert flat.stats["teacher_threshold"] == pytest.approx([0.7125, 0.7125])
    # the paper's rule keeps its class-wise bar whatever the option says
    paper = make("llkd-paper", teacher_threshold="global").select(batch(teacher, [[0.5, 0.5]] * 4))
    assert paper.stats["teacher_threshold"][1] < paper.stats["teacher_threshold"][0]
