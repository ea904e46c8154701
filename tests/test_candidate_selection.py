"""Candidate-batch selection (student.candidate_factor, docs/method.md "Candidate-batch
selection"): MiniLM in frozen mode on 60 demo texts (embeddings encoded once per module),
batch 8, so an epoch is 8 chunks of candidates (the last one 4 rows) and k = 4 scores them in
two forwards. Checks: k = 1 is the per-batch path (its step log and checkpoint as they were);
with `all` (every row selected) k = 4 trains exactly what k = 1 trains; with llkd every update
has B rows except the last of an epoch, the counts add up, thresholds are logged per chunk and
the schedule ends with the candidates; llkd-paper refuses it; a run killed mid-epoch resumes
to the uninterrupted result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llkd.config import ConfigError, SelectionConfig, StudentConfig
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.student.callbacks import Callback
from llkd.student.step import TrainStep

N, B, K, EPOCHS = 60, 8, 4, 2
CHUNKS = -(-N // B)  # chunks of candidates an epoch: 8, the last one 4 rows


@pytest.fixture(scope="module")
def data(demo_dir, agnews_schema) -> tuple[LabelSchema, TextSet, np.ndarray]:
    rows = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text(encoding="utf-8").splitlines()[:N]]
    pool = TextSet(texts=[r["text"] for r in rows], ids=[r["id"] for r in rows], labels=None)
    probs = np.random.default_rng(0).dirichlet([0.6] * agnews_schema.num_labels, size=N)
    return agnews_schema, pool, probs


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings") / "embeddings.sqlite"  # MiniLM encodes the pool once for every run here


def _trainer(data, embeddings: Path, out: Path, selector: str = "llkd", callbacks=(), **student):
    from llkd.student.trainer import StudentTrainer

    schema, pool, probs = data
    settings = {"epochs": EPOCHS, **student}
    cfg = StudentConfig(model="minilm", mode="frozen", batch_size=B, max_length=32, dtype="float32", device="cpu", threads=1, output=out, **settings)
    return StudentTrainer(cfg, SelectionConfig(selector=selector), schema, pool, probs, progress=False, callbacks=callbacks, embedding_cache=embeddings)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]


def _weights(trainer) -> dict[str, torch.Tensor]:
    return trainer.model.classifier.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Updates(Callback):
    """The size of every optimiser update, grouped by epoch (wraps TrainStep.train_rows)."""

    def __init__(self, monkeypatch) -> None:
        self.epochs: list[list[int]] = [[]]
        real = TrainStep.train_rows

        def train_rows(step, rows, weights, count=None):
            self.epochs[-1].append(len(rows))
            return real(step, rows, weights, count)

        monkeypatch.setattr(TrainStep, "train_rows", train_rows)

    def on_step_end(self, state, step):
        if step.epoch_end:
            self.epochs.append([])


def test_factor_1_is_the_per_batch_path(data, embeddings, tmp_path):
    from llkd.student.trainer import read_checkpoint

    trainer = _trainer(data, embeddings, tmp_path / "k1", candidate_factor=1)
    result = trainer.train()
    rows = _rows(tmp_path / "k1")
    assert [r["step"] for r in rows] == list(range(1, EPOCHS * CHUNKS + 1)) and [r["batch"] for r in rows] == ([B] * (CHUNKS - 1) + [N % B]) * EPOCHS
    assert not any({"chunks", "trained", "pooled"} & set(r) for r in rows)
    saved = json.loads(read_checkpoint(tmp_path / "k1" / "checkpoint.pt")["state"])
    assert list(saved) == ["step", "updates", "gradient_samples", "seen", "dev_history", "best_epoch", "stopped_early"]
    # the default config is the same run, row for row and weight for weight
    default = _trainer(data, embeddings, tmp_path / "default")
    assert "candidate_factor" not in default.cfg.model_fields_set
    assert default.train().summary() == result.summary() and _rows(tmp_path / "default") == rows
    assert _same(_weights(default), _weights(trainer))


def test_with_every_row_selected_factor_4_trains_what_factor_1_trains(data, embeddings, tmp_path):
    """`all` selects every candidate: each step takes one chunk, a full batch, in the
    per-batch order and at the per-batch learning rate, so the weights are bit-identical."""
    one = _trainer(data, embeddings, tmp_path / "k1", "all", candidate_factor=1)
    four = _trainer(data, embeddings, tmp_path / "k4", "all", candidate_factor=K)
    assert one.train().summary() == four.train().summary()
    assert _same(_weights(one), _weights(four))
    a, b = _rows(tmp_path / "k1"), _rows(tmp_path / "k4")
    assert [(r["batch"], r["selected"], r["loss"], r["lr"]) for r in a] == [(r["batch"], r["selected"], r["loss"], r["lr"]) for r in b]


def test_factor_4_trains_full_batches_and_counts_them(data, embeddings, tmp_path, monkeypatch):
    scored: list[int] = []
    real_score = TrainStep.score
    monkeypatch.setattr(TrainStep, "score", lambda step, rows: scored.append(len(rows)) or real_score(step, rows))
    updates = Updates(monkeypatch)
    result = _trainer(data, embeddings, tmp_path / "k4", callbacks=[updates], candidate_factor=K).train()
    rows = _rows(tmp_path / "k4")
    sizes = [e for e in updates.epochs if e]
    assert len(sizes) == EPOCHS and all(s[:-1] == [B] * (len(s) - 1) and 0 < s[-1] <= B for s in sizes)  # B rows, but an epoch's last
    # one no-grad forward over k x B candidates, never across an epoch's end: 4 chunks (32 rows), then 4 (28 rows)
    assert scored == [K * B, N - K * B] * EPOCHS
    # counts: every candidate seen once an epoch, every selected row trained in its epoch
    flat = [n for s in sizes for n in s]
    assert result.sample_steps_seen == sum(r["batch"] for r in rows) == EPOCHS * N
    assert result.gradient_samples == sum(flat) == sum(r["trained"] for r in rows) == sum(r["selected"] for r in rows)
    assert result.optimizer_updates == len(flat) and result.steps == len(rows) < EPOCHS * CHUNKS
    assert 0 < result.gradient_samples < EPOCHS * N  # llkd selected some rows, not all
    # thresholds per chunk of B: each chunk is one SelectionBatch; the top level is the last chunk's
    chunks = [c for r in rows for c in r["chunks"]]
    assert len(chunks) == EPOCHS * CHUNKS and [c["batch"] for c in chunks] == ([B] * (CHUNKS - 1) + [N % B]) * EPOCHS
    for r in rows:
        assert r["selected"] == sum(c["selected"] for c in r["chunks"]) and r["pooled"] < B
        assert r["teacher_threshold"] == r["chunks"][-1]["teacher_threshold"] and r["student_threshold"] == r["chunks"][-1]["student_threshold"]
        assert all(len(c["teacher_threshold"]) == len(c["student_threshold"]) == 4 for c in r["chunks"])
        assert r["selected_per_class"] == np.sum([c["selected_per_class"] for c in r["chunks"]], axis=0).tolist()
    assert rows[-1]["pooled"] == 0  # the run's last step trained what was left
    assert [r["epoch"] for r in rows] == sorted(r["epoch"] for r in rows) and rows[-1]["epoch"] == EPOCHS - 1
    assert rows[-1]["lr"] == 0.0  # the linear schedule ran to its end with the last candidates


def test_llkd_paper_refuses_candidate_batches(data, embeddings, tmp_path):
    with pytest.raises(ConfigError) as err:
        _trainer(data, embeddings, tmp_path / "paper", "llkd-paper", candidate_factor=K)
    assert "llkd-paper" in str(err.value) and "candidate_factor" in str(err.value) and "\n" not in str(err.value)
    _trainer(data, embeddings, tmp_path / "paper", "llkd-paper", candidate_factor=1)  # the per-batch path is its own


class Interrupt(Exception):
    pass


class Watch(Callback):
    """Records the candidate pool after every step; with ``stop`` raises after that step."""

    def __init__(self, stop: int = 0) -> None:
        self.stop, self.pools = stop, {}

    def on_step_end(self, state, step):
        self.pools[state.step] = (step.epoch_end, state.candidates.state_dict())
        if state.step == self.stop:
            raise Interrupt


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(data, embeddings, tmp_path):
    watch = Watch()
    ref = _trainer(data, embeddings, tmp_path / "ref", callbacks=[watch], candidate_factor=K, checkpoint_every=1)
    ref_result = ref.train()
    # stop where both a scored, unselected chunk and selected, untrained rows are pending
    stop = next(s for s, (end, pool) in watch.pools.items() if not end and pool["scored"] and pool["rows"])
    with pytest.raises(Interrupt):
        _trainer(data, embeddings, tmp_path / "run", callbacks=[Watch(stop)], candidate_factor=K, checkpoint_every=1).train()
    trainer = _trainer(data, embeddings, tmp_path / "run", candidate_factor=K, checkpoint_every=1)
    result = trainer.train()
    assert result.summary() == ref_result.summary()
    assert (tmp_path / "run" / "steps.jsonl").read_text() == (tmp_path / "ref" / "steps.jsonl").read_text()
    assert _same(_weights(trainer), _weights(ref))
    # a per-batch checkpoint is another run's: k = 1 starts fresh instead of resuming it
    other = _trainer(data, embeddings, tmp_path / "run", candidate_factor=1)
    assert other.train().steps == EPOCHS * CHUNKS


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A random one-layer BERT: the fine-tuning path (dropout, scoring in eval mode) in a second."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["stocks", "fall", "rise", "oil", "bank", "team", "wins", "match", "goal", "coach", "mars", "rover"]
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_fine_tuning_takes_the_same_path_and_resumes(data, tiny_bert, tmp_path, monkeypatch):
    from llkd.student.trainer import StudentTrainer

    schema, pool, probs = data
    small = TextSet(texts=[" ".join(t.lower().split()[:6]) for t in pool.texts[:24]], ids=pool.ids[:24], labels=None)

    def trainer(out: Path, callbacks=()):
        cfg = StudentConfig(model=str(tiny_bert), mode="finetune", batch_size=4, max_length=16, dtype="float32", device="cpu", threads=1,
                            output=out, epochs=2, candidate_factor=3, checkpoint_every=1)
        return StudentTrainer(cfg, SelectionConfig(selector="llkd"), schema, small, probs[:24], progress=False, callbacks=callbacks)

    updates = Updates(monkeypatch)
    watch = Watch()
    ref = trainer(tmp_path / "ref", [updates, watch])
    ref_result = ref.train()
    assert all(s[:-1] == [4] * (len(s) - 1) for s in updates.epochs if s) and ref_result.gradient_samples == sum(map(sum, updates.epochs))
    stop = next(s for s, (end, pool) in watch.pools.items() if not end and (pool["scored"] or pool["rows"]))
    with pytest.raises(Interrupt):
        trainer(tmp_path / "run", [Watch(stop)]).train()
    resumed = trainer(tmp_path / "run")
    assert resumed.train().summary() == ref_result.summary()
    assert (tmp_path / "run" / "steps.jsonl").read_text() == (tmp_path / "ref" / "steps.jsonl").read_text()
    assert _same(resumed.model.state_dict(), ref.model.state_dict())
