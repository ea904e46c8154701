"""The trainer itself: its pure parts (batch order, schedule, state, step-log rows, callback
order), one step (nothing selected: no update; loss weights as the selector gave them), and
whole runs on a tiny random BERT (a step that selects nothing leaves the weights alone;
checkpoint -> resume restores the state and ends on the uninterrupted run's weights). Then
checkpoint files the trainer refuses, and `llkd train` resuming from a bad one (MiniLM in
frozen mode on six texts whose teacher answers are cached)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llkd.config import SelectionConfig, StudentConfig
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.selection.selectors import Selection, SelectionBatch, Selector
from llkd.student.callbacks import Callback, CallbackList, step_row
from llkd.student.modes import FrozenMode
from llkd.student.state import Schedule, StepOutcome, TrainState
from llkd.student.step import TrainStep, batch_rows

WORDS = ["stocks", "fall", "rise", "oil", "bank", "team", "wins", "match", "goal", "coach", "mars", "rover", "lands", "talks", "resume", "vote"]


# --- pure parts ------------------------------------------------------------------------------
def test_batches_are_a_fresh_permutation_each_epoch_topped_up_for_equal_shares():
    steps = [batch_rows(s, 10, 4, seed=3) for s in range(6)]  # 3 steps an epoch: 4, 4, 2 rows
    assert [e for e, _ in steps] == [0, 0, 0, 1, 1, 1] and [len(r) for _, r in steps] == [4, 4, 2] * 2
    for epoch in (0, 1):
        rows = np.concatenate([r for e, r in steps if e == epoch])
        assert sorted(rows) == list(range(10))
        assert list(rows) == list(np.random.default_rng(3 + epoch).permutation(10))
    epoch, rows = batch_rows(2, 10, 4, seed=3, world=4)  # the short last batch, topped up from the epoch's start
    assert len(rows) == 4 and list(rows[2:]) == list(np.random.default_rng(3).permutation(10)[:2])


def test_schedule_ends_a_fractional_last_epoch_early():
    s = Schedule(n=10, batch_size=4, epochs=1.5)
    assert (s.steps_per_epoch, s.total_steps) == (3, 5)
    assert [k for k in range(1, 6) if s.epoch_ends(k)] == [3, 5]


def test_state_counters_round_trip_and_an_older_checkpoints_counters_restore():
    state = TrainState.fresh(6)
    state.record_update(np.array([1, 4]))
    state.step, state.seen = 3, 12
    state.dev_history.append({"epoch": 1, "accuracy": 0.5, "macro_f1": 0.4})
    # the checkpoint's JSON: the keys it always had, then the best-epoch bookkeeping
    assert list(state.counters()) == ["step", "updates", "gradient_samples", "seen", "dev_history", "best_epoch", "stopped_early"]
    other = TrainState.fresh(6)
    other.restore(json.loads(json.dumps(state.counters())), state.selected.copy())
    assert other.counters() == state.counters() and (other.selected == state.selected).all()
    assert (state.updates, state.gradient_samples, list(np.flatnonzero(state.selected))) == (1, 2, [1, 4])


def test_step_row_format():
    state = TrainState.fresh(4)
    state.selected[:1] = True
    state.step = 7
    out = StepOutcome(epoch=1, batch=4, selected=0, loss=float("nan"), lr=1e-4, stats={"teacher_threshold": 0.7}, epoch_end=False)
    assert step_row(state, out) == {"step": 7, "epoch": 1, "batch": 4, "selected": 0, "selection_rate": 0.0, "loss": None, "lr": 1e-4,
                                    "data_usage": 0.25, "teacher_threshold": 0.7}


class Recorder(Callback):
    def __init__(self, name: str, events: list) -> None:
        self.name, self.events = name, events

    def on_train_begin(self, state):
        self.events.append((self.name, "begin", state.step))

    def on_step_end(self, state, step):
        self.events.append((self.name, "step", state.step))

    def on_train_end(self, state):
        self.events.append((self.name, "end", state.step))


def test_callbacks_fire_in_list_order():
    events: list = []
    callbacks = CallbackList([Recorder("a", events), Recorder("b", events)])
    state = TrainState.fresh(2)
    callbacks.on_train_begin(state)
    state.step = 1
    callbacks.on_step_end(state, StepOutcome(0, 2, 2, 0.1, 1e-4, {}, True))
    callbacks.on_train_end(state)
    assert events == [("a", "begin", 0), ("b", "begin", 0), ("a", "step", 1), ("b", "step", 1), ("a", "end", 1), ("b", "end", 1)]


# --- one step ------------------------------------------------------------------------------
class Given(Selector):
    """Selects the rows in ``mask`` with the loss weights ``weights`` (by pool row)."""

    def __init__(self, mask: list[bool], weights: list[float], soft: bool = False) -> None:
        super().__init__(3, SelectionConfig(selector="all"))
        self.mask, self.weights, self.soft_targets = torch.tensor(mask), torch.tensor(weights), soft

    def select(self, batch: SelectionBatch) -> Selection:
        return Selection(self.mask[batch.indices], self.weights[batch.indices] * self.mask[batch.indices])


def _one_step(selector: Selector):
    """A linear head on fixed features (the frozen mode's step without an encoder)."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    mode = FrozenMode(StudentConfig(), model=None, tokenizer=None, device=torch.device("cpu"), dtype="float32")
    mode.features = torch.randn(4, 5)
    head = torch.nn.Linear(5, 3)
    teacher = torch.softmax(torch.randn(4, 3) * 2, dim=-1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    step = TrainStep(mode, head, selector, optimizer, Accelerator(cpu=True), teacher.argmax(1), teacher)
    return step, head, mode, teacher


@pytest.mark.parametrize("soft", [False, True])
def test_loss_weights_reach_the_loss_as_the_selector_gave_them(soft):
    mask, weights = [True, False, True, True], [2.0, 9.0, 0.5, 0.5]  # row 1's weight must not count: it is not selected
    step, head, mode, teacher = _one_step(Given(mask, weights, soft))
    before = [p.detach().clone() for p in head.parameters()]
    ref = torch.nn.Linear(5, 3)
    ref.load_state_dict(head.state_dict())
    logits = ref(mode.features[[0, 2, 3]])
    w = torch.tensor([2.0, 0.5, 0.5])
    if soft:
        q = teacher[[0, 2, 3]]
        per_row = (q * (q.log() - torch.log_softmax(logits, -1))).sum(-1)
    else:
        per_row = torch.nn.functional.cross_entropy(logits, teacher.argmax(1)[[0, 2, 3]], reduction="none")
    expected = (w * per_row).sum() / 3  # sum_i w_i * loss_i / |S|
    expected.backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)

    chosen = step.select(np.arange(4))
    assert chosen.count == 3
    assert step.update(chosen) == pytest.approx(float(expected.detach()), rel=1e-6)
    for p0, p, r in zip(before, head.parameters(), ref.parameters()):
        assert torch.allclose(p, p0 - 0.1 * r.grad, atol=1e-7)  # SGD: the update is the weighted loss's gradient


# --- whole runs on a tiny random BERT --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def _data(n: int = 16) -> tuple[LabelSchema, TextSet, np.ndarray, TextSet]:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=n)
    dev = TextSet(texts=texts[:6], labels=[0, 1, 2, 0, 1, 2], ids=[f"d{i}" for i in range(6)])
    return LabelSchema.from_names(["a", "b", "c"]), TextSet(texts=texts, ids=[str(i) for i in range(n)], labels=None), probs, dev


def _trainer(folder: Path, out: Path, selection: SelectionConfig, callbacks=(), mode: str = "finetune", dev: bool = True, **student):
    from llkd.student.trainer import StudentTrainer

    schema, pool, probs, dev_set = _data()
    settings = {"epochs": 2, **student}
    cfg = StudentConfig(model=str(folder), mode=mode, batch_size=4, max_length=16, dtype="float32", device="cpu", threads=1, output=out, **settings)
    return StudentTrainer(cfg, selection, schema, pool, probs, dev=dev_set if dev else None, progress=False, callbacks=callbacks)


def test_a_run_whose_steps_select_nothing_leaves_the_weights_unchanged(tiny_bert, tmp_path, monkeypatch):
    from llkd.student.model import load_student
    from llkd.student.trainer import seed_everything

    monkeypatch.setenv("LLKD_CACHE_DIR", str(tmp_path / "cache"))
    for mode in ("finetune", "frozen"):
        trainer = _trainer(tiny_bert, tmp_path / mode, SelectionConfig(selector="fixed", fixed_threshold=1.0), mode=mode)
        result = trainer.train()
        assert (result.steps, result.optimizer_updates, result.gradient_samples, result.sample_steps_seen) == (8, 0, 0, 32)
        rows = [json.loads(x) for x in (tmp_path / mode / "steps.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, 9)) and all(r["loss"] is None and r["selected"] == 0 for r in rows)
        seed_everything(42)  # the head the run started from
        start, _ = load_student(str(tiny_bert), trainer.schema, frozen=mode == "frozen")
        trained = trainer.model.state_dict()
        assert all(torch.equal(trained[k], v) for k, v in start.state_dict().items()), mode  # weight decay moved nothing either


def _snapshot(state: TrainState) -> dict:
    return {**json.loads(json.dumps(state.counters())), "selected": state.selected.copy()}


class Interrupt(Exception):
    pass


class StopAfter(Callback):
    """Stops training after ``step`` steps (after the built-in callbacks saw the step)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.state: dict | None = None

    def on_step_end(self, state, step):
        if state.step == self.step:
            self.state = _snapshot(state)
            raise Interrupt


class Observer(Callback):
    """What the state was at the start and what was on disk at each epoch end."""

    def __init__(self, out: Path) -> None:
        self.out, self.begin, self.events, self.at_epoch_end = out, None, [], []

    def on_train_begin(self, state):
        self.begin = _snapshot(state)
        self.events.append(("begin", state.step))

    def on_step_end(self, state, step):
        self.events.append(("step", state.step))
        if step.epoch_end:
            from llkd.student.trainer import read_checkpoint

            saved = json.loads(read_checkpoint(self.out / "checkpoint.pt")["state"])
            logged = [json.loads(x)["step"] for x in (self.out / "steps.jsonl").read_text().splitlines()]
            self.at_epoch_end.append((state.step, saved["step"], len(saved["dev_history"]), logged[-1]))

    def on_train_end(self, state):
        self.events.append(("end", state.step))


def test_checkpoint_then_resume_restores_the_state_and_ends_on_the_uninterrupted_weights(tiny_bert, tmp_path):
    from llkd.student.trainer import read_checkpoint

    llkd = SelectionConfig(selector="llkd")  # student scoring pass and adaptive thresholds: selector state to restore
    observer = Observer(tmp_path / "ref")
    ref = _trainer(tiny_bert, tmp_path / "ref", llkd, callbacks=[observer], checkpoint_every=1)
    ref_result = ref.train()
    # callbacks in order, and the built-ins before the user's: at each epoch end the step log
    # row and the checkpoint (with that epoch's dev score) are already on disk
    assert observer.events == [("begin", 0), *[("step", k) for k in range(1, 9)], ("end", 8)]
    assert observer.at_epoch_end == [(4, 4, 1, 4), (8, 8, 2, 8)]
    assert 0 < ref_result.optimizer_updates and [h["epoch"] for h in ref_result.dev_history] == [1, 2]

    stop = StopAfter(3)
    with pytest.raises(Interrupt):
        _trainer(tiny_bert, tmp_path / "run", llkd, callbacks=[stop], checkpoint_every=1).train()
    saved = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert json.loads(saved["state"]) == {k: v for k, v in stop.state.items() if k != "selected"}
    assert (saved["selected"].numpy() == stop.state["selected"]).all()

    resumed = Observer(tmp_path / "run")
    trainer = _trainer(tiny_bert, tmp_path / "run", llkd, callbacks=[resumed], checkpoint_every=1)
    result = trainer.train()
    assert resumed.begin["step"] == 3 and resumed.events[:2] == [("begin", 3), ("step", 4)]
    assert {k: v for k, v in resumed.begin.items() if k != "selected"} == {k: v for k, v in stop.state.items() if k != "selected"}
    assert (resumed.begin["selected"] == stop.state["selected"]).all()
    assert result.summary() == ref_result.summary() and result.dev_history == ref_result.dev_history
    assert (tmp_path / "run" / "steps.jsonl").read_text() == (tmp_path / "ref" / "steps.jsonl").read_text()
    want, got = ref.model.state_dict(), trainer.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


# --- checkpoint files ------------------------------------------------------------------------
def test_resume_trims_step_log_rows_after_the_checkpoint(tmp_path):
    """Rows logged after the last checkpoint (before a kill) are dropped on resume, so the
    resumed run does not repeat steps in steps.jsonl; a half-written last line goes too."""
    from llkd.student.trainer import trim_step_log

    log = tmp_path / "steps.jsonl"
    log.write_text("".join(json.dumps({"step": k, "selected": 1}) + "\n" for k in range(1, 8)) + '{"step": 8, "sel')
    assert trim_step_log(log, 5) == 5
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert trim_step_log(tmp_path / "missing.jsonl", 3) == 0


class Planted:
    """An object only full unpickling would build (and run code for)."""


def _checkpoints(tmp_path):
    """(name, path) of checkpoint files the trainer must refuse without loading them."""
    import pickle

    good = tmp_path / "real.pt"
    torch.save({"model": {"w": torch.zeros(4000)}, "fingerprint": "f"}, good)
    files = {"truncated": good.read_bytes()[: good.stat().st_size // 2], "empty": b"", "text": b"not a checkpoint\n",
             "pickled": pickle.dumps({"model": Planted()})}
    out = []
    for name, data in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        out.append((name, path))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    out.append(("tensor", tmp_path / "tensor.pt"))
    return out


def test_unreadable_checkpoints_are_one_line_and_left_alone(tmp_path):
    from llkd.data.errors import DataError
    from llkd.student.trainer import read_checkpoint

    words = {"truncated": "unreadable checkpoint, truncated or not a torch file", "empty": "unreadable checkpoint",
             "text": "not a checkpoint llkd can read", "pickled": "pickled objects, which llkd never loads", "tensor": "not a checkpoint written by llkd train"}
    for name, path in _checkpoints(tmp_path):
        before = path.read_bytes()
        with pytest.raises(DataError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert words[name] in message and "\n" not in message and "--no-student-resume" in message, (name, message)
        assert path.read_bytes() == before


def test_train_with_a_bad_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    from llkd.cli import main
    from llkd.config import TeacherConfig
    from llkd.teacher import TeacherAnswer, TeacherCache, build_teacher
    from llkd.teacher.cache import text_hash

    monkeypatch.setenv("LLKD_CACHE_DIR", str(tmp_path / "llkd-cache"))  # the frozen student's embedding cache
    texts = ["Stocks fall", "Arsenal win", "Mars rover lands", "Talks resume", "Oil climbs", "Federer wins"]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "labels.yaml").write_text("labels: [World, Sports]\n")
    url = "http://127.0.0.1:9/v1"  # nothing listens: every answer must come from the cache
    identity = build_teacher(TeacherConfig(backend="openai", model="m", base_url=url), LabelSchema.from_names(["World", "Sports"])).identity()
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many(identity, [(text_hash(t), None, TeacherAnswer([0.8, 0.2] if i % 2 else [0.3, 0.7], "vote")) for i, t in enumerate(texts)])
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a zip")  # a copy cut short
    args = ["train", "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(tmp_path / "labels.yaml"), "--teacher-backend", "openai",
            "--teacher-model", "m", "--teacher-base-url", url, "--teacher-cache", str(tmp_path / "teacher.sqlite"), "--teacher-calibration", "none",
            "--student-mode", "frozen", "--student-epochs", "1", "--student-output", str(out), "--no-report", "--no-progress"]
    assert main(args) == 2  # before: a RuntimeError traceback from torch.load
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"llkd train: error: {out / 'checkpoint.pt'}: unreadable checkpoint") and "--no-student-resume" in err
    assert (out / "checkpoint.pt").read_bytes() == b"PK\x03\x04 half a zip"  # left as it was
    assert main([*args, "--no-student-resume"]) == 0  # as the message says: trains from the start


@pytest.mark.parametrize("mode", ["finetune", "frozen"])
def test_the_best_dev_epoch_is_kept_and_patience_stops_the_run(tiny_bert, tmp_path, monkeypatch, mode):
    """Dev macro-F1 by epoch is scripted (0.5, 0.7, 0.6, 0.4): the saved student holds epoch 2's
    weights (best.pt, written when epoch 2 scored), summary says so; with patience 1 the run
    stops after epoch 3, the first epoch without a better score."""
    from llkd.student.callbacks import BEST, DevEvaluation

    monkeypatch.setenv("LLKD_CACHE_DIR", str(tmp_path / "cache"))
    scores = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.4}
    monkeypatch.setattr(DevEvaluation, "evaluate", lambda self, epoch: {"epoch": epoch, "accuracy": 0.0, "macro_f1": scores[epoch]})
    llkd = SelectionConfig(selector="all")
    best_seen: dict[str, torch.Tensor] = {}

    class AtEpoch2(Callback):
        def on_step_end(self, state, step):
            if step.epoch_end and step.epoch + 1 == 2:
                best_seen.update({k: v.clone() for k, v in torch.load(tmp_path / mode / BEST, weights_only=True).items()})

    trainer = _trainer(tiny_bert, tmp_path / mode, llkd, callbacks=[AtEpoch2()], mode=mode, epochs=4)
    result = trainer.train()
    assert result.steps == 16 and [h["epoch"] for h in result.dev_history] == [1, 2, 3, 4]
    assert result.kept_epoch == 2 and result.kept_reason == "best dev macro-F1 0.7000 at epoch 2 of 4"
    trained = (trainer.model.classifier if mode == "frozen" else trainer.model).state_dict()
    assert best_seen and all(torch.equal(trained[k], v) for k, v in best_seen.items())
    assert json.loads((tmp_path / mode / "model" / "llkd.json").read_text())["training"]["kept_epoch"] == 2
    # keep_best off: the last epoch, and it says so
    last = _trainer(tiny_bert, tmp_path / f"{mode}-last", llkd, mode=mode, epochs=4, keep_best=False).train()
    assert last.kept_epoch == 4 and last.kept_reason == "the last epoch (keep_best off)"
    # patience 1: epoch 3 does not beat epoch 2, so training stops there (12 of 16 steps)
    early = _trainer(tiny_bert, tmp_path / f"{mode}-early", llkd, mode=mode, epochs=4, patience=1).train()
    assert early.steps == 12 and early.kept_epoch == 2 and "stopped early after 3 epochs (patience 1)" in early.kept_reason
