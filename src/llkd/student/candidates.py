"""Candidate-batch (online batch) selection: student.candidate_factor = k > 1 (docs/method.md,
"Candidate-batch selection").

The per-batch step scores B rows and trains on the few it selects; with LLKD's 20-47 % that
is a small backward batch, far below the machine's matmul rate, and the saving is eaten. Here
one no-grad forward scores k chunks of B candidates (the epoch's next k batches of the
per-batch order, in the mode's scoring path and dtype); the selector sees each chunk as one
SelectionBatch, in order, so thresholds, loss weights and the class-balance EMA update per
chunk of B exactly as they do per batch; the selected rows are pooled and trained in full
gradient batches of B.

A step here is one gradient batch: it selects chunks (scoring the next group of k when the
last one is used up) until the pool holds B rows or the epoch's candidates run out, then makes
one update on B pooled rows. Rows left over carry to the next step (fewer than B). At the
epoch's end the remainder is trained too, as one short update in that last step, rather than
dropped (it would lose up to B - 1 selected rows an epoch, always from the epoch's last
chunks) or carried into the next epoch (the epoch-end dev score and checkpoint would miss
rows of that epoch, and a row could meet itself again in one gradient batch). So every update
has B rows except the last of an epoch, and every selected row is trained in its epoch.

The learning-rate schedule keeps its unit: one chunk of B candidates, epochs x ceil(N / B) of
them as in the per-batch path, so it ends when the last epoch's candidates are scored,
whatever the selection rate. A step advances it by the chunks it consumed; its update runs at
the position of its last chunk, as a batch's update does. The run makes about selection rate x
that many steps (at most one per chunk), with the per-batch path's gradient samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llkd.student.state import CandidatePool, StepOutcome, TrainParts, TrainState
from llkd.student.step import TrainStep, batch_rows


class CandidateStep:
    """One step of candidate-batch selection (module docstring); call it with the run's state."""

    def __init__(self, step: TrainStep, parts: TrainParts, n: int, batch_size: int, factor: int, seed: int) -> None:
        self.step, self.scheduler, self.schedule = step, parts.scheduler, parts.schedule
        self.n, self.batch_size, self.factor, self.seed = n, batch_size, factor, seed

    def __call__(self, state: TrainState) -> StepOutcome:
        pool = state.candidates
        assert pool is not None, "TrainState.fresh(n, candidates=True) holds the candidate pool"
        per_epoch = self.schedule.steps_per_epoch
        epoch = pool.cursor // per_epoch  # a non-empty pool holds this epoch's rows: an epoch's end empties it
        end = min((epoch + 1) * per_epoch, self.schedule.total_steps)  # the first chunk after this epoch
        chunks = self._fill(pool, end)
        last = pool.cursor >= end
        trained, loss = self._train(state, pool, flush=last)
        self.scheduler.step()  # the last chunk's unit, after the update that ran at its rate
        seen = sum(c["batch"] for c in chunks)
        state.seen += seen
        state.step += 1
        return StepOutcome(epoch=epoch, batch=seen, selected=sum(c["selected"] for c in chunks), loss=loss,
                           lr=self.scheduler.get_last_lr()[0], stats=self._stats(chunks, trained, pool), epoch_end=last,
                           progress=len(chunks))

    def _fill(self, pool: CandidatePool, end: int) -> list[dict[str, Any]]:
        """Select chunks into the pool until it holds a batch or the epoch's chunks run out; the
        step-log entry of each chunk."""
        chunks: list[dict[str, Any]] = []
        while len(pool.rows) < self.batch_size and pool.cursor < end:
            if chunks:
                self.scheduler.step()  # one unit per chunk; the step's last one after its update
            rows, probs = self._next_chunk(pool, end)
            chosen = self.step.select(rows, probs)
            pool.cursor += 1
            if chosen.selection is not None:
                mask = chosen.selection.mask
                pool.rows.extend(int(r) for r in rows[mask.numpy()])
                pool.weights.extend(float(w) for w in chosen.selection.weights[mask])
            chunks.append({"batch": len(rows), "selected": chosen.count, **chosen.stats})
        return chunks

    def _next_chunk(self, pool: CandidatePool, end: int) -> tuple[np.ndarray, torch.Tensor | None]:
        """The next chunk's rows and, when the selector reads the student, its probabilities:
        from the group scored last, else the next k chunks (never past the epoch) in one forward."""
        if not pool.scored:
            group = [batch_rows(c, self.n, self.batch_size, self.seed)[1] for c in range(pool.cursor, min(pool.cursor + self.factor, end))]
            pool.scored = group
            pool.probs = [None] * len(group)
            if self.step.selector.needs_student:
                probs = self.step.score(np.concatenate(group))
                pool.probs = [p.clone() for p in torch.split(probs, [len(g) for g in group])]
        return pool.scored.pop(0), pool.probs.pop(0)

    def _train(self, state: TrainState, pool: CandidatePool, flush: bool) -> tuple[int, float]:
        """Updates on full batches of pooled rows (and with ``flush`` on what remains): rows
        trained and their mean loss (NaN: no update)."""
        trained, total = 0, 0.0
        while len(pool.rows) >= self.batch_size or (flush and pool.rows):
            take = min(self.batch_size, len(pool.rows))
            rows = np.asarray(pool.rows[:take], dtype=np.int64)
            # each row keeps the weight its chunk gave it (mean 1 over that chunk's selected set)
            weights = torch.tensor(pool.weights[:take], dtype=torch.float32)
            del pool.rows[:take], pool.weights[:take]
            total += self.step.train_rows(rows, weights) * take
            state.record_update(rows)
            trained += take
        return trained, total / trained if trained else float("nan")

    def _stats(self, chunks: list[dict[str, Any]], trained: int, pool: CandidatePool) -> dict[str, Any]:
        """The step-log entry: each chunk's selector stats (thresholds per chunk of B), the last
        chunk's at the top (the levels in force after the step, which plots and reports read),
        selected counts per class over the step, rows trained and rows left in the pool."""
        top = {k: v for k, v in chunks[-1].items() if k not in ("batch", "selected")} if chunks else {}
        per_class = np.sum([c["selected_per_class"] for c in chunks], axis=0).tolist() if chunks else []
        return {**top, "selected_per_class": per_class, "trained": trained, "pooled": len(pool.rows), "chunks": chunks}
