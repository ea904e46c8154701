"""Token-classification student with token-level LLKD selection (issue 21): the selection math
on hand-made arrays, sub-word soft targets from teacher spans, and a tiny real training of the
packaged MiniLM (gold spans as the 'teacher': plumbing, not a quality claim), its save/load
round trip and ONNX export."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llkd.data.entities import IGNORE_INDEX, EntitySchema, Span, load_entities
from llkd.evaluation.entity_metrics import entity_f1
from llkd.selection.thresholds import loss_weights
from llkd.selection.tokens import (
    TokenSelector,
    masked_labels,
    num_type_classes,
    tag_classes,
    token_loss,
    token_uncertainty,
)

X = IGNORE_INDEX
# tags of this schema: O, B-Drug, I-Drug, B-Disease, I-Disease (classes O=0, Drug=1, Disease=2)
SCHEMA = EntitySchema.from_names(["Drug", "Disease"])
LABELS = torch.tensor([[X, 1, 2, 0, 0, X], [X, 3, 4, 0, X, X]])
CONF = torch.tensor([[1.0, 0.8, 0.6, 0.9, 0.7, 0.0], [0.0, 0.5, 0.3, 0.95, 1.0, 1.0]])  # ignore positions hold junk


def _valid(t: torch.Tensor) -> list[float]:
    return t[LABELS != X].tolist()


def test_tag_classes_are_entity_types_with_o_its_own():
    assert num_type_classes(SCHEMA.num_tags) == 3
    assert tag_classes(torch.arange(5)).tolist() == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        num_type_classes(4)


def test_teacher_thresholds_per_type_on_valid_tokens_only():
    sel = TokenSelector("teacher_adaptive", SCHEMA.num_tags)
    out = sel.select(LABELS, CONF)
    c = {0: [0.9, 0.7, 0.95], 1: [0.8, 0.6], 2: [0.5, 0.3]}  # valid tokens by type; ignore junk left out
    g = sum(sum(v) for v in c.values()) / 7
    m = {y: sum(v) / len(v) for y, v in c.items()}
    tau = [g * m[y] / max(m.values()) for y in range(3)]
    assert out.stats["teacher_threshold"] == pytest.approx(tau, abs=1e-6)
    expected = [[False, 0.8 >= tau[1], 0.6 >= tau[1], 0.9 >= tau[0], 0.7 >= tau[0], False],
                [False, 0.5 >= tau[2], 0.3 >= tau[2], 0.95 >= tau[0], False, False]]
    assert out.mask.tolist() == expected
    assert not out.mask[LABELS == X].any()
    # weights: c on the selected tokens, normalised to mean 1 there
    w = out.weights[out.mask]
    assert float(w.mean()) == pytest.approx(1.0) and (out.weights[~out.mask] == 0).all()
    assert (w / CONF[out.mask]).std() < 1e-6
    assert out.stats["selected_per_type"] == [int(out.mask[tag_classes(LABELS) == y].sum()) for y in range(3)]
    # second batch: EMA g <- 0.9 g + 0.1 mean; a type absent from the batch keeps its level
    labels2, conf2 = torch.tensor([[0, 1, X]]), torch.tensor([[0.5, 0.4, 1.0]])
    sel.select(labels2, conf2)
    assert sel.teacher.global_level == pytest.approx(0.9 * g + 0.1 * 0.45, abs=1e-6)
    assert sel.teacher.class_level.tolist() == pytest.approx([0.9 * m[0] + 0.05, 0.9 * m[1] + 0.04, m[2]], abs=1e-6)


def test_llkd_keeps_teacher_confident_and_student_uncertain_tokens_weighted_c_times_u():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 6, SCHEMA.num_tags) * 2, dim=-1)
    sel = TokenSelector("llkd", SCHEMA.num_tags)
    assert sel.needs_student and not sel.soft_targets
    out = sel.select(LABELS, CONF, probs)
    u = token_uncertainty(probs)
    assert u.shape == (2, 6) and float(u.max()) <= 1.0
    assert float(token_uncertainty(torch.full((1, SCHEMA.num_tags), 1 / SCHEMA.num_tags))[0]) == pytest.approx(1.0)
    classes = tag_classes(LABELS).clamp_min(0)
    tau_t, tau_s = torch.tensor(out.stats["teacher_threshold"]), torch.tensor(out.stats["student_threshold"])
    expected = (LABELS != X) & (CONF >= tau_t.float()[classes]) & (u >= tau_s.float()[classes])
    assert out.mask.tolist() == expected.tolist() and out.mask.any()
    # student side "batch" (default): the current batch's type means, no EMA
    uu = {y: [x for x, k in zip(_valid(u), _valid(tag_classes(LABELS))) if k == y] for y in range(3)}
    gm, mm = np.mean(_valid(u)), [np.mean(uu[y]) for y in range(3)]
    assert out.stats["student_threshold"] == pytest.approx([gm * v / max(mm) for v in mm], abs=1e-5)
    w = out.weights
    assert torch.allclose(w, loss_weights(out.mask.reshape(-1), CONF.reshape(-1), u.reshape(-1)).reshape(2, 6))
    assert float(w[out.mask].mean()) == pytest.approx(1.0) and (w[~out.mask] == 0).all()
    # tokens not selected are ignored in the loss; their sentences stay
    train = masked_labels(LABELS, out.mask)
    assert (train[out.mask] == LABELS[out.mask]).all() and (train[~out.mask] == X).all()
    with pytest.raises(ValueError, match="student"):
        TokenSelector("llkd", SCHEMA.num_tags).select(LABELS, CONF)
    ema = TokenSelector("llkd", SCHEMA.num_tags, student_threshold="ema")
    ema.select(LABELS, CONF, probs)
    assert ema.student.momentum == 0.9 and sel.student.momentum == 0.0


def test_baseline_modes():
    valid = LABELS != X
    for mode in ("all", "soft"):
        out = TokenSelector(mode, SCHEMA.num_tags).select(LABELS, CONF)
        assert out.mask.tolist() == valid.tolist() and torch.equal(out.weights, valid.float())
    assert TokenSelector("soft", SCHEMA.num_tags).soft_targets
    fixed = TokenSelector("fixed", SCHEMA.num_tags, fixed_threshold=0.7).select(LABELS, CONF)
    assert fixed.mask.tolist() == (valid & (CONF >= 0.7)).tolist() and fixed.stats["selected"] == 4
    with pytest.raises(ValueError, match="unknown"):
        TokenSelector("random", SCHEMA.num_tags)


def test_token_loss_counts_the_selected_tokens_only():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, SCHEMA.num_tags, requires_grad=True)
    mask = torch.tensor([[False, True, False, True, False, False], [False, True, True, False, False, False]])
    weights = torch.where(mask, torch.tensor(2.0), torch.tensor(0.0))
    labels = masked_labels(LABELS, mask)
    loss = token_loss(logits, labels, weights)
    ce = torch.nn.functional.cross_entropy(logits[mask], LABELS[mask], reduction="none").detach()
    assert float(loss.detach()) == pytest.approx(float((2.0 * ce).sum() / 4))
    q = torch.softmax(torch.randn(2, 6, SCHEMA.num_tags), dim=-1)
    kl = (q[mask] * (q[mask].log() - torch.log_softmax(logits[mask], -1))).sum(-1).detach()
    assert float(token_loss(logits, labels, weights, q).detach()) == pytest.approx(float((2.0 * kl).sum() / 4), rel=1e-5)
    empty = token_loss(logits, torch.full_like(LABELS, X), weights)
    empty.backward()
    assert float(empty.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


# --------------------------------------------------------------------------- targets

TEXT = "Aspirin cures bad headaches"
# MiniLM's offsets: [CLS] as ##pi ##rin cure ##s bad headache ##s [SEP]
OFFSETS = [(0, 0), (0, 2), (2, 4), (4, 7), (8, 12), (12, 13), (14, 17), (18, 26), (26, 27), (0, 0)]
SPANS = [(0, 7, "Drug", 0.8), {"start": 14, "end": 27, "type": "Disease", "confidence": 0.6}]


def test_subword_soft_targets_from_span_confidences():
    from llkd.student.tokens import subword_targets

    labels, probs, conf = subword_targets(TEXT, SPANS, OFFSETS, SCHEMA, outside_confidence=0.95)
    assert labels.tolist() == [X, 1, 2, 2, 0, 0, 3, 4, 4, X]
    assert probs[1].tolist() == pytest.approx([0.2, 0.8, 0, 0, 0]) and probs[2].tolist() == pytest.approx([0.2, 0, 0.8, 0, 0])
    assert probs[7].tolist() == pytest.approx([0.4, 0, 0, 0, 0.6])
    assert probs[4].tolist() == pytest.approx([0.95, 0.0125, 0.0125, 0.0125, 0.0125])
    assert probs[0].tolist() == [0] * 5 and probs[-1].tolist() == [0] * 5
    assert conf.tolist() == pytest.approx([0, 0.8, 0.8, 0.8, 0.95, 0.95, 0.6, 0.6, 0.6, 0])
    assert np.allclose(probs[labels != X].sum(-1), 1.0)
    labels, probs, conf = subword_targets(TEXT, [Span(0, 7, "Drug")], OFFSETS, SCHEMA, rest="ignore")
    assert labels.tolist() == [X, 1, X, X, 0, X, 0, 0, X, X]
    assert conf[1] == 1.0 and conf[4] == pytest.approx(0.9)  # defaults: span 1.0, outside 0.9
    assert probs[2].tolist() == [0] * 5
    with pytest.raises(ValueError, match="confidence"):
        subword_targets(TEXT, [(0, 7, "Drug", 1.5)], OFFSETS, SCHEMA)


def test_a_truncated_reply_leaves_o_tokens_at_the_default_outside_confidence():
    from llkd.student.tokens import DEFAULT_OUTSIDE_CONFIDENCE, subword_targets
    from llkd.teacher.entities import Generation, parse_generation

    for reply, stop in (("Drug: Aspirin\nDisease: bad head", "length"), ("I cannot help with that.", "eos")):
        answer = parse_generation(TEXT, Generation(reply, stop=stop), SCHEMA)
        assert answer.outside_confidence is None, reply  # the teacher knows nothing about the O tokens
        spans = [(s.start, s.end, s.type, s.confidence) for s in answer.spans]
        labels, probs, conf = subword_targets(TEXT, spans, OFFSETS, SCHEMA, outside_confidence=answer.outside_confidence)
        o = labels == 0
        assert o.any() and np.allclose(probs[o, 0], DEFAULT_OUTSIDE_CONFIDENCE) and np.allclose(conf[o], DEFAULT_OUTSIDE_CONFIDENCE)


# --------------------------------------------------------------------------- real model

NCBI = EntitySchema.from_names(["Disease"])


def shared_data_root() -> Path:
    """conftest.shared_data_root, loaded by path (``from conftest import`` can get
    benchmarks/tests/conftest.py when that was collected first)."""
    spec = importlib.util.spec_from_file_location("_llkd_tests_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shared_data_root()
MAX_LENGTH = 48


@pytest.fixture(scope="module")
def ncbi():
    path = shared_data_root() / "ner" / "NCBI-disease" / "train.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    es = load_entities(path, NCBI, limit=200)
    return es.subset([i for i in range(len(es)) if es.spans[i]][:24])


@pytest.fixture(scope="module")
def trained(ncbi, tmp_path_factory):
    from llkd.student.tokens import load_token_student, predict_spans, train_token_student

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model, tok = load_token_student("minilm", NCBI)
        untrained = entity_f1(ncbi.spans, predict_spans(model, tok, ncbi.texts, NCBI, MAX_LENGTH))
        teacher = [[(s.start, s.end, s.type, 0.9) for s in spans] for spans in ncbi.spans]
        result = train_token_student(ncbi.texts, teacher, NCBI, selector="llkd", epochs=2, batch_size=4, lr=3e-4, head_lr=1e-2,
                                     max_length=MAX_LENGTH, seed=0, output=tmp_path_factory.mktemp("tok") / "student", dev=ncbi)
        yield result, untrained
    finally:
        torch.set_num_threads(threads)


def test_tiny_training_learns_and_predicts_aligned_spans(ncbi, trained):
    from llkd.student.tokens import predict_spans

    result, untrained = trained
    pred = predict_spans(result.model, result.tokenizer, ncbi.texts, NCBI, MAX_LENGTH)
    f1 = entity_f1(ncbi.spans, pred)
    assert f1 > untrained + 0.1, (f1, untrained)
    assert result.dev_history[-1]["f1"] == pytest.approx(f1)
    assert result.steps == len(result.step_log) == 12 and 0 < result.optimizer_updates <= 12
    assert 0 < result.gradient_tokens < result.token_steps_seen and 0 < result.data_usage <= 1
    assert sum(r["selected"] for r in result.step_log) == result.gradient_tokens
    row = result.step_log[0]
    assert len(row["teacher_threshold"]) == len(row["student_threshold"]) == len(row["selected_per_type"]) == 2
    assert any(pred)
    for text, spans in zip(ncbi.texts, pred):
        for s in spans:
            covered = text[s.start:s.end]
            assert s.type == "Disease" and 0 <= s.start < s.end <= len(text) and covered == covered.strip()
            assert (s.start == 0 or text[s.start - 1].isspace()) and (s.end == len(text) or text[s.end].isspace())  # whole words
    loose = predict_spans(result.model, result.tokenizer, ncbi.texts, NCBI, MAX_LENGTH, words=False)  # sub-word edges
    assert all(text[s.start:s.end].strip() == text[s.start:s.end] for text, spans in zip(ncbi.texts, loose) for s in spans)
    assert result.wall_s < 60


def test_save_load_round_trip_predicts_the_same(ncbi, trained):
    from transformers import AutoModelForTokenClassification

    from llkd.student.tokens import load_token_trained, predict_spans

    result, _ = trained
    meta = json.loads((result.model_dir / "llkd.json").read_text())
    assert meta["task"] == "token-classification" and meta["entity_schema"] == NCBI.to_dict() and meta["selector"] == "llkd"
    model, tok, schema, rest = load_token_trained(result.model_dir)
    assert schema == NCBI and rest == "label"
    before = predict_spans(result.model, result.tokenizer, ncbi.texts, NCBI, MAX_LENGTH)
    assert predict_spans(model, tok, ncbi.texts, schema, MAX_LENGTH) == before
    plain = AutoModelForTokenClassification.from_pretrained(str(result.model_dir))  # plain transformers, no llkd code
    assert [plain.config.id2label[i] for i in range(3)] == list(NCBI.tags)


def test_onnx_export_parity(ncbi, trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from llkd.student.tokens import export_token_onnx, load_token_trained

    result, _ = trained
    path = export_token_onnx(result.model_dir, tmp_path / "tok.onnx")
    model, tok, _, _ = load_token_trained(result.model_dir)
    enc = tok(ncbi.texts[:3], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    with torch.inference_mode():
        want = model(input_ids=torch.from_numpy(feeds["input_ids"]), attention_mask=torch.from_numpy(feeds["attention_mask"])).logits.numpy()
    assert got.shape == want.shape == (3, enc["input_ids"].shape[1], 3)
    real = enc["attention_mask"].astype(bool)
    assert np.abs(got[real] - want[real]).max() < 1e-4
    assert (got.argmax(-1)[real] == want.argmax(-1)[real]).all()
    assert not math.isnan(float(got.sum()))
