"""The report of one training run: ``report.md`` and its PNG plots in the run's output folder.

It answers what the numbers in the terminal do not: did selection keep a sensible share of
each batch, did the thresholds settle, did the selected samples collapse onto one class, how
did the dev score move per epoch, which classes the student gets wrong on the test split, and
whether the teacher's confidence meant anything (reliability, where gold labels exist).

Pure: arrays and the trainer's step log in, files out (``llkd train`` and the Python API
gather the arrays).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from llkd.config import LLKDConfig
from llkd.data.schema import LabelSchema
from llkd.reporting.confidence import confidence_report
from llkd.evaluation.metrics import ClassificationReport, classification_report
from llkd.reporting.plots import (
    plot_budget_curve,
    plot_class_mix,
    plot_class_share,
    plot_dev_history,
    plot_selection,
    plot_test_scores,
    plot_thresholds,
    read_steps,
    reliability_diagram,
)

if TYPE_CHECKING:  # the run's result only: a report reads what training produced, not the trainer
    from llkd.student.result import TrainResult

log = logging.getLogger(__name__)

REPORT = "report.md"
STEPS = "steps.jsonl"
# Collapse warning: a class is over-selected when, over the last quarter of training, it holds
# at least half of the selected samples and twice its share of the pool's pseudo-labels.
OVER_SELECTED_SHARE = 0.5
OVER_SELECTED_RATIO = 2.0


@dataclass
class ScoredSplit:
    """A gold-labelled split with the student's and (optionally) the teacher's probabilities."""

    name: str
    gold: np.ndarray  # [N] label indices
    student_probs: np.ndarray | None = None  # [N, C]
    teacher_probs: np.ndarray | None = None  # [N, C]; NaN rows: no teacher answer


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def selected_counts(rows: list[dict[str, Any]], num_classes: int) -> np.ndarray | None:
    """Per-step selected samples per pseudo-label class [steps, C], when the step log has them."""
    if not rows or any(r.get("selected_per_class") is None for r in rows):
        return None
    counts = np.asarray([r["selected_per_class"] for r in rows], dtype=float)
    return counts if counts.shape[1] == num_classes else None


def collapse_warnings(names: list[str], pool_share: np.ndarray, late_share: np.ndarray) -> list[str]:
    """Classes that dominate the late selected samples far beyond their pool share, and classes
    the teacher often predicts that selection stopped taking at all."""
    out = []
    for k, name in enumerate(names):
        if late_share[k] >= OVER_SELECTED_SHARE and late_share[k] >= OVER_SELECTED_RATIO * pool_share[k]:
            out.append(f"**{name}** is {late_share[k]:.0%} of the samples selected in the last quarter of training "
                       f"but {pool_share[k]:.0%} of the pool's pseudo-labels: selection is collapsing onto it.")
        elif pool_share[k] >= 0.05 and late_share[k] == 0:
            out.append(f"**{name}** ({pool_share[k]:.0%} of the pool's pseudo-labels) had no selected sample in the last quarter of training.")
    return out


def run_settings(cfg: LLKDConfig, train_seconds: float | None = None) -> dict[str, str]:
    """The lines of a config a reader of the report needs to know what was run."""
    sel, stu = cfg.selection, cfg.student
    changed = [f"{k} {v}" for k, v in sel.model_dump().items() if k != "selector" and v != type(sel).model_fields[k].default]
    out = {
        "teacher": f"`{cfg.teacher.model}` ({cfg.teacher.backend}, calibration {cfg.teacher.calibration})",
        "selector": f"`{sel.selector}` ({', '.join(changed) if changed else 'default settings'})",
        "student": f"`{stu.model}`, {stu.mode}, {stu.resolved_epochs():g} epochs, batch {stu.batch_size}, max length {stu.max_length}, seed {stu.seed}",
    }
    if train_seconds is not None:
        out["training time"] = f"{train_seconds:.1f} s"
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
            *["| " + " | ".join(str(c) for c in r) + " |" for r in rows]]


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"


class _Plots:
    """Draws each plot once, remembering failures (matplotlib missing) as a note instead."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.missing: str | None = None

    def draw(self, fn: Any, name: str, *args: Any, **kwargs: Any) -> str | None:
        """``fn(*args, path=..., **kwargs)``; the PNG's name relative to the report, or None."""
        if self.missing:
            return None
        try:
            path = fn(*args, path=self.folder / name, **kwargs)
        except RuntimeError as e:  # matplotlib is an optional dependency
            self.missing = str(e)
            return None
        return Path(path).name if path else None


@dataclass
class _Run:
    """What every section of the report reads."""

    output: Path
    names: list[str]
    c: int
    rows: list[dict[str, Any]]  # the step log
    plots: "_Plots"
    teacher_probs: np.ndarray
    answered: np.ndarray
    pseudo: np.ndarray  # pseudo-labels of the answered pool rows
    pool_share: np.ndarray
    result: "TrainResult"
    test: ScoredSplit | None
    pool_gold: Sequence[int] | None
    dev_size: int | None


def _test_section(r: _Run) -> list[str]:
    """Test scores of teacher and student, per-class table and plot."""
    md = ["## Test split", ""]
    student_rep: ClassificationReport | None = None
    unanswered = 0
    teacher_rep: ClassificationReport | None = None
    if r.test is not None and r.test.student_probs is not None:
        student_rep = classification_report(r.test.gold, r.test.student_probs.argmax(axis=1), r.names)
        if r.test.teacher_probs is not None:
            ok = ~np.isnan(r.test.teacher_probs).any(axis=1)  # scored on the texts it answered
            teacher_rep = classification_report(np.asarray(r.test.gold)[ok], r.test.teacher_probs[ok].argmax(axis=1), r.names)
            unanswered = int((~ok).sum())
        scores = [("student", f"{student_rep.accuracy:.4f}", f"{student_rep.macro_f1:.4f}")]
        if teacher_rep is not None:
            scores.insert(0, ("teacher (zero-shot)", f"{teacher_rep.accuracy:.4f}", f"{teacher_rep.macro_f1:.4f}"))
        note = f" The teacher did not answer {unanswered} of them; its scores leave them out." if teacher_rep is not None and unanswered else ""
        md += [f"{len(r.test.gold)} gold-labelled texts (`{r.test.name}`).{note}", ""] + _table(["model", "accuracy", "macro-F1"], scores) + [""]
        f1 = {"student": student_rep.f1} if teacher_rep is None else {"teacher": teacher_rep.f1, "student": student_rep.f1}
        png = r.plots.draw(plot_test_scores, "test_scores.png", r.names, f1, student_rep.confusion)
        if png:
            md += [f"![per-class F1 and the student's confusion matrix on the test split]({png})", ""]
        per_class = [(n, f"{student_rep.precision[k]:.3f}", f"{student_rep.recall[k]:.3f}", f"{student_rep.f1[k]:.3f}",
                      f"{teacher_rep.f1[k]:.3f}" if teacher_rep else "-", student_rep.support[k]) for k, n in enumerate(r.names)]
        md += _table(["class", "student precision", "student recall", "student F1", "teacher F1", "support"], per_class) + [""]
    else:
        md += ["No test split given (`--data-test`): no test scores.", ""]
    return md


def _dev_section(r: _Run) -> list[str]:
    """Dev macro-F1 after each epoch."""
    md = ["## Dev macro-F1 per epoch", ""]
    if r.result.dev_history:
        png = r.plots.draw(plot_dev_history, "dev_f1.png", r.result.dev_history, n_texts=r.dev_size)
        if png:
            md += [f"![dev macro-F1 and accuracy after each epoch]({png})", ""]
        md += _table(["epoch", "accuracy", "macro-F1"], [(h["epoch"], f"{h['accuracy']:.4f}", f"{h['macro_f1']:.4f}") for h in r.result.dev_history]) + [""]
    else:
        md += ["No dev split given (`--data-dev`): no per-epoch scores.", ""]
    return md


def _selection_section(r: _Run) -> list[str]:
    """Thresholds and selection rate over steps."""
    md = ["## Selection over steps", ""]
    if r.rows:
        png = r.plots.draw(plot_thresholds, "thresholds.png", r.output / STEPS, r.names)
        if png:
            md += ["Class-wise adaptive thresholds (teacher confidence must reach $\\tau^T(y)$, student uncertainty "
                   "$\\tau^S(y)$, for the sample's pseudo-label $y$; dashed: the global level) and the share of each "
                   "batch selected, with the share of the pool used so far.", "", f"![class-wise thresholds and selection rate over steps]({png})", ""]
        else:
            png = r.plots.draw(plot_selection, "selection.png", r.rows)
            if png:
                md += ["This selector logs no class-wise thresholds; the share of each batch it selected:", "", f"![selection rate and data usage over steps]({png})", ""]
        rates = np.asarray([row["selection_rate"] for row in r.rows], dtype=float)
        q = max(1, len(rates) // 4)
        md += [f"Selection rate: {_pct(float(rates[:q].mean()))} of each batch in the first quarter of steps, "
               f"{_pct(float(rates[-q:].mean()))} in the last; {sum(1 for x in rates if x == 0)} of {len(rates)} steps selected nothing.", ""]
    else:
        md += [f"No step log (`{STEPS}`) in {r.output}.", ""]
    return md


def _class_mix_section(r: _Run) -> list[str]:
    """The pseudo-label classes of the selected samples: the early warning of a collapse."""
    md = ["## Pseudo-label classes among the selected samples", ""]
    counts = selected_counts(r.rows, r.c)
    if counts is not None:
        png = r.plots.draw(plot_class_share, "class_share.png", r.rows, r.names, r.pool_share)
        if png:
            md += ["The early warning of a collapse: a class whose line climbs far above its dotted share of the "
                   "pool's pseudo-labels is taking over the gradient.", "", f"![share of each pseudo-label class among the selected samples over steps]({png})", ""]
        q = max(1, len(counts) // 4)
        total, late = counts.sum(axis=0), counts[-q:].sum(axis=0)
        all_share = total / total.sum() if total.sum() else np.full(r.c, np.nan)
        late_share = late / late.sum() if late.sum() else np.full(r.c, np.nan)
        md += _table(["class", "pool pseudo-labels", "selected, all steps", "selected, last quarter"],
                     [(n, _pct(r.pool_share[k]), _pct(all_share[k]), _pct(late_share[k])) for k, n in enumerate(r.names)]) + [""]
        warnings = collapse_warnings(r.names, r.pool_share, late_share) if late.sum() else ["Nothing was selected in the last quarter of training."]
        md += ([f"- Warning: {w}" for w in warnings] or ["No class dominates the late selection."]) + [""]
    else:
        ever = np.asarray(r.result.selected_rows, dtype=bool)[r.answered]
        sel_share = class_shares(r.pseudo[ever], r.c)
        png = r.plots.draw(plot_class_mix, "class_mix.png", r.names, {"pool's pseudo-labels": r.pool_share, "samples ever selected": sel_share},
                         title="pseudo-label classes: pool vs samples ever selected")
        md += ["The step log has no per-class counts (`selected_per_class`), so the mix over steps cannot be drawn; "
               "the classes of the distinct samples ever selected, against the pool:", ""]
        if png:
            md += [f"![pseudo-label classes of the pool and of the samples ever selected]({png})", ""]
        md += _table(["class", "pool pseudo-labels", "samples ever selected"], [(n, _pct(r.pool_share[k]), _pct(sel_share[k])) for k, n in enumerate(r.names)]) + [""]
    return md


def _reliability_section(r: _Run) -> list[str]:
    """Confidence against accuracy for the teacher and the student."""
    md = ["## Confidence vs accuracy", ""]
    panels: dict[str, dict[str, Any]] = {}
    if r.pool_gold is not None:
        panels["teacher, pool"] = confidence_report(r.teacher_probs, np.asarray(r.pool_gold))
    if r.test is not None and r.test.teacher_probs is not None:
        panels[f"teacher, {r.test.name}"] = confidence_report(r.test.teacher_probs, r.test.gold)
    if r.test is not None and r.test.student_probs is not None:
        panels[f"student, {r.test.name}"] = {**confidence_report(r.test.student_probs, r.test.gold), "xlabel": "student confidence (max probability)"}
    panels = {k: v for k, v in panels.items() if v["n"]}
    if panels:
        png = r.plots.draw(reliability_diagram, "reliability.png", panels)
        if png:
            md += ["Accuracy of the texts in each confidence bin (bars, with their count) against the bin's mean "
                   "confidence (dots); on the dashed diagonal confidence is calibrated. Selection trusts the "
                   "teacher's confidence, so it helps only where higher confidence means higher accuracy.", "",
                   f"![reliability diagrams]({png})", ""]
        md += _table(["", "texts", "accuracy", "mean confidence", "ECE", "higher confidence, higher accuracy"],
                     [(k, v["n"], f"{v['accuracy']:.3f}", f"{v['mean_confidence']:.3f}", f"{v['ece']:.3f}",
                       "yes" if v["confidence_tracks_accuracy"] else "**no**") for k, v in panels.items()]) + [""]
    else:
        md += ["No gold labels on the pool or a test split: reliability cannot be measured.", ""]
    return md


def _distill_section(plots: "_Plots", d: Mapping[str, Any], pool_size: int) -> list[str]:
    """The rounds of a budgeted run: texts asked, tokens, cost and the round student's scores."""
    rounds = d["rounds"]
    md = ["## Budgeted distillation: the rounds", "",
          f"{d['asked']} of {pool_size} pool texts asked ({_pct(d['asked'] / max(pool_size, 1))}; budget {d['budget_calls']}); stopped: {d['stopped']}.", ""]
    asked, rows = 0, []
    points = []
    for rnd in rounds:
        asked += len(rnd["rows"])
        f1 = rnd.get("student_dev_macro_f1")
        if f1 is not None:
            points.append((asked, f1))
        u = rnd["usage"]
        changed = rnd.get("changed_share")
        rows.append((rnd["index"], asked, u.get("calls", 0), f"{u.get('prompt_tokens', 0):,}", f"{u.get('completion_tokens', 0):,}",
                     "-" if f1 is None else f"{f1:.4f}", "-" if changed is None else _pct(changed), f"{rnd.get('train_seconds', 0):.1f}"))
    png = plots.draw(plot_budget_curve, "budget_curve.png", {"round student": points}, title="dev macro-F1 against texts asked") if points else None
    if png:
        md += [f"![dev macro-F1 against texts asked]({png})", ""]
    md += _table(["round", "texts asked so far", "teacher calls", "prompt tokens", "completion tokens", "round student dev macro-F1",
                  "predictions changed", "train s"], rows) + [""]
    if d.get("usd") is not None:
        md += [f"Teacher cost: ${d['usd']:.4f}.", ""]
    return md


def write_run_report(
    output: str | Path,
    schema: LabelSchema,
    result: "TrainResult",
    teacher_probs: np.ndarray,
    *,
    settings: Mapping[str, Any] | None = None,
    pool_gold: Sequence[int] | None = None,
    test: ScoredSplit | None = None,
    dev_size: int | None = None,
    distill: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md`` and its plots into ``output`` (the training run's folder, where the
    trainer left ``steps.jsonl``). ``teacher_probs`` are the pool's [N, C] teacher
    probabilities the student trained on; ``settings`` a few lines of what was run;
    ``distill``: a budgeted run's summary (``DistillResult.summary()``), its rounds section."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = schema.names
    c = schema.num_labels
    rows = read_steps(output / STEPS)
    plots = _Plots(output)
    answered = ~np.isnan(teacher_probs).any(axis=1)
    pseudo = teacher_probs[answered].argmax(axis=1)
    pool_share = class_shares(pseudo, c)

    r = _Run(output, names, c, rows, plots, teacher_probs, answered, pseudo, pool_share, result, test, pool_gold, dev_size)
    md = ["# Training run report", ""]
    summary = result.summary()
    facts = [("pool texts", f"{len(teacher_probs)} ({int(answered.sum())} with a teacher answer)"),
             *((k, str(v)) for k, v in (settings or {}).items()),
             ("steps / optimizer updates", f"{summary['steps']} / {summary['optimizer_updates']}"),
             ("gradient samples / sample-steps seen", f"{summary['gradient_samples']} / {summary['sample_steps_seen']} ({_pct(summary['sample_step_rate'])})"),
             ("data usage (distinct pool texts ever selected)", f"{_pct(summary['data_usage'])} ({summary['distinct_samples_used']} texts)"),
             ("saved student", f"`{result.model_dir}`: {result.kept_reason}")]
    md += _table(["run", ""], facts, "ll") + [""]

    if distill is not None:
        md += _distill_section(plots, distill, len(teacher_probs))
    for section in (_test_section, _dev_section, _selection_section, _class_mix_section, _reliability_section):
        md += section(r)
    if plots.missing:
        md += [f"Plots were skipped: {plots.missing}.", ""]
    path = output / REPORT
    path.write_text("\n".join(md), encoding="utf-8")
    return path
