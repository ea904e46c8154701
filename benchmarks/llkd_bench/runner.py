"""The benchmark loop: methods x datasets x seeds, one record per run.

Every student method uses the same student, optimiser, schedule, epochs, batch size and seeds;
only the selector (and its settings) differs. Each run is written to
``<output>/runs/<dataset>/<teacher>/<method>/seed<k>/record.json`` and skipped on a rerun
when its settings are unchanged, so a long benchmark resumes after a kill.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from llkd_bench.datasets import BenchData, carve_dev_from_pool, load_dataset, skew_pool
from llkd_bench.noise import NoiseSpec, inject_noise
from llkd_bench.teacher import TeacherAnswers, get_answers
from llkd.config import SelectionConfig, StudentConfig, TeacherConfig
from llkd.evaluation.metrics import classification_report, reweighted_macro_f1
from llkd.pipeline import calibration_summary
from llkd.teacher.calibration import CALIBRATORS, Calibrator, LabelledAnswers, fit_calibrator, total_variation

log = logging.getLogger(__name__)

# "teacher" (zero-shot on the test split) and "supervised" (selector all on gold one-hot
# labels) are the two references next to the selectors of suite 1.
REFERENCES = ["teacher", "supervised"]
SUITES = ["baselines", "sensitivity", "efficiency", "noise", "teacher_size", "variants"]

# LLKD variants (method.md 8), each a SelectionConfig override; a variant name joins tags
# with "+", e.g. "lu+batch+bal".
VARIANT_TAGS: dict[str, tuple[tuple[str, Any], ...]] = {
    "lu": (("student_signal", "label_uncertainty"),),
    "entropy": (("student_signal", "entropy"),),
    "batch": (("student_threshold", "batch"),),
    "ema": (("student_threshold", "ema"),),
    "tglobal": (("teacher_threshold", "global"),),
    "tclass": (("teacher_threshold", "class"),),
    "bal": (("class_balance", "selected_share"),),
    "nobal": (("class_balance", "none"),),  # the default before 2026-11-29's third pass
    "soft": (("soft_targets", True),),
    "guni": (("class_balance_target", "uniform"),),  # the guard's target before 2026-12-01
    "gprior": (("class_balance_target", "prior"),),
}
VARIANT_TAG_HELP = f"{', '.join(VARIANT_TAGS)}, floor<k>"  # for error messages
DEFAULT_VARIANTS = ["lu", "batch", "lu+batch", "lu+batch+bal", "lu+batch+floor4", "lu+batch+bal+floor4", "lu+batch+soft"]


def _variant_tag(tag: str) -> tuple[tuple[str, Any], ...] | None:
    """A tag's overrides; ``floor<k>`` is a floor of k samples per step (e.g. floor4)."""
    if tag in VARIANT_TAGS:
        return VARIANT_TAGS[tag]
    if tag.startswith("floor") and tag[len("floor"):].isdigit():
        return (("min_per_step", int(tag[len("floor"):])),)
    return None


def variant_methods(variants: list[str]) -> list[Method]:
    """Suite "variants": the paper's rule and each named variant of the llkd selector."""
    out = [Method("llkd-paper", "llkd-paper", suite="variants")]
    for v in variants:
        tags = v.split("+")
        unknown = [t for t in tags if _variant_tag(t) is None]
        if unknown:
            raise ValueError(f"unknown LLKD variant tag(s) {unknown} in '{v}'; known: {VARIANT_TAG_HELP}")
        overrides = tuple(kv for t in tags for kv in _variant_tag(t) or ())
        out.append(Method(f"llkd+{v}", "llkd", overrides, suite="variants"))
    return out


@dataclass(frozen=True)
class Method:
    name: str
    selector: str = ""  # "" for the teacher's zero-shot row
    selection: tuple[tuple[str, Any], ...] = ()  # SelectionConfig overrides
    noise: NoiseSpec | None = None
    kind: str = "student"  # student | teacher | supervised
    suite: str = "baselines"
    matched: bool = False  # given LLKD's gradient samples (same seed): compute-matched baseline


# all@matched: every sample, for fewer epochs (epochs x LLKD's gradient share); random@matched:
# a fixed random subset kept at LLKD's gradient share. Both get LLKD's gradient-sample count.
MATCHED = "@matched"


def baseline_methods(names: list[str]) -> list[Method]:
    out = []
    for n in names:
        if n == "teacher":
            out.append(Method("teacher", kind="teacher"))
        elif n == "supervised":
            out.append(Method("supervised", "all", kind="supervised"))
        elif n.startswith("llkd+"):  # an LLKD variant next to the baselines, e.g. llkd+bal
            selector, overrides = selector_and_overrides(n)
            out.append(Method(n, selector, overrides))
        elif n.endswith(MATCHED):
            base = n[: -len(MATCHED)]
            if base not in ("all", "random"):
                raise ValueError(f"'{n}': only all{MATCHED} and random{MATCHED} exist (compute matched to llkd)")
            out.append(Method(n, base, matched=True))
        else:
            out.append(Method(n, n))
    return out


def sensitivity_methods(momenta: list[float], init_values: list[float]) -> list[Method]:
    """Suite 2: LLKD's threshold settings. Teacher-only and student-only are the
    teacher_adaptive / student_adaptive baselines (run here too if suite 1 is not)."""
    out = [Method("llkd", "llkd", suite="sensitivity")]  # the library's default settings (momentum 0.9, first_batch, weighted)
    default_momentum = SelectionConfig.model_fields["momentum"].default  # the grid's point that is plain "llkd"
    out += [Method(f"llkd/momentum={m:g}", "llkd", (("momentum", m),), suite="sensitivity") for m in momenta if m != default_momentum]
    out += [Method(f"llkd/init=const{v:g}", "llkd", (("init", "constant"), ("init_value", v)), suite="sensitivity") for v in init_values]
    out.append(Method("llkd/unweighted", "llkd", (("weighted", False),), suite="sensitivity"))
    # beyond the paper: LLKD's selection and weights with soft targets (the teacher's distribution)
    out.append(Method("llkd/soft-targets", "llkd", (("soft_targets", True),), suite="sensitivity"))
    out += [Method("teacher_adaptive", "teacher_adaptive", suite="sensitivity"), Method("student_adaptive", "student_adaptive", suite="sensitivity")]
    return out


def selector_and_overrides(name: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """A selector name, or an LLKD variant written as in the variants suite (``llkd+lu+batch``)."""
    if name.startswith("llkd+"):
        m = variant_methods([name[len("llkd+"):]])[1]
        return m.selector, m.selection
    return name, ()


def noise_methods(specs: list[NoiseSpec], selectors: list[str]) -> list[Method]:
    out = []
    for spec in specs:
        for name in selectors:
            selector, overrides = selector_and_overrides(name)
            out.append(Method(f"{name}/noise={spec.tag}", selector, overrides, noise=spec, suite="noise"))
    return out


# BenchSettings field -> the StudentConfig / TeacherConfig field it sets. Their defaults are
# the library's (a default changed there changes the benchmark); the bench's tier presets
# (commands/bench.py) choose epochs and max_length on purpose.
STUDENT_FIELDS = {"student": "model", "student_mode": "mode", "max_length": "max_length", "batch_size": "batch_size", "epochs": "epochs",
                  "lr": "lr", "head_lr": "head_lr", "student_dtype": "dtype", "threads": "threads", "device": "device"}
TEACHER_FIELDS = {"teacher_dtype": "dtype", "calibration": "calibration", "device": "device"}  # one --device for both


def library_default(section: type[BaseModel], name: str) -> Any:
    """A dataclass field defaulting to the llkd config section's default for ``name``."""
    return field(default=section.model_fields[name].default)


@dataclass
class BenchSettings:
    datasets: list[str]
    suites: list[str]
    methods: list[str]
    seeds: list[int]
    teachers: list[str]
    pool_size: int
    test_size: int
    epochs: float
    max_length: int = library_default(StudentConfig, "max_length")
    batch_size: int = library_default(StudentConfig, "batch_size")
    lr: float = library_default(StudentConfig, "lr")
    head_lr: float | None = library_default(StudentConfig, "head_lr")  # None: the student config's default for the mode
    student_mode: str = library_default(StudentConfig, "mode")  # finetune | frozen (the fast tier)
    student_dtype: str = library_default(StudentConfig, "dtype")
    dev_size: int = 0
    student: str = library_default(StudentConfig, "model")
    threads: int | None = library_default(StudentConfig, "threads")
    device: str = library_default(StudentConfig, "device")
    teacher_dtype: str = library_default(TeacherConfig, "dtype")
    calibration: str = library_default(TeacherConfig, "calibration")  # fitted on the pool (gold only of a dev split, when there is one)
    dev_from_pool: int = 0  # > 0: the last N pool texts become the dev split (their teacher answers exist)
    imbalance: float = 0.0  # > 1: the pool (and dev) resampled to a long-tailed prior with this imbalance ratio
    imbalance_head: int = 0  # the class index that is the largest under imbalance
    split_seed: int = 0
    data_root: Path | None = None
    answers_dir: Path | None = None
    teacher_source: str = "auto"
    teacher_cache: Path | None = None
    output: Path = Path("runs/bench")
    momenta: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.99])
    init_values: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    noise: list[str] = field(default_factory=lambda: ["uniform:0.2", "uniform:0.4", "biased:0.2"])
    noise_selectors: list[str] = field(default_factory=lambda: ["all", "fixed", "llkd"])
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    progress: bool = True
    resume: bool = True
    keep_models: bool = False
    quick: bool = False

    def resolved_head_lr(self) -> float:
        # resolved here, so a run fingerprint changes when the product default changes
        return StudentConfig(mode=self.student_mode, head_lr=self.head_lr).resolved_head_lr()  # type: ignore[arg-type]

    def student_dict(self) -> dict[str, Any]:
        """The StudentConfig settings of every run (head_lr resolved), as in its fingerprint."""
        return {**{name: getattr(self, ours) for ours, name in STUDENT_FIELDS.items()}, "head_lr": self.resolved_head_lr()}


def calibrate(pool: np.ndarray, test: np.ndarray, how: str, dev: tuple[np.ndarray, list[int]] | None = None) -> tuple[np.ndarray, np.ndarray, Calibrator]:
    """The calibration ``how`` (llkd.teacher.calibration) fitted on the pool only (and the
    teacher's answers on a gold-labelled dev split, for calibrators that use one) and applied
    with that same reference to both splits. The benchmark keeps no content-free answer, so
    contextual calibration is refused here."""
    labelled = LabelledAnswers(dev[0], np.asarray(dev[1])) if dev is not None else None
    calibrator = fit_calibrator(how, pool, None, labelled)
    return calibrator.apply(pool), calibrator.apply(test), calibrator


# Options added after runs were recorded, with the value that reproduces the behaviour from
# before they existed: a fingerprint without the key means that value, so adding an option
# does not invalidate every earlier run.
LEGACY_SETTINGS: dict[tuple[str, str], Any] = {
    ("selection", "teacher_threshold"): "class",
    ("selection", "class_balance_target"): "uniform",
}


def same_settings(fingerprint_a: str, fingerprint_b: str) -> bool:
    """Whether two run fingerprints describe the same run. The student's output folder and CPU
    thread count are not settings of the method: a bench folder that was moved or copied, or
    run in several single-thread processes, is still reused."""
    try:
        a, b = json.loads(fingerprint_a), json.loads(fingerprint_b)
    except (TypeError, ValueError):
        return False
    for f in (a, b):
        if not isinstance(f, dict):
            continue
        if isinstance(f.get("student"), dict):
            f["student"].pop("output", None)
            f["student"].pop("threads", None)
        for (section, key), value in LEGACY_SETTINGS.items():
            if isinstance(f.get(section), dict):
                f[section].setdefault(key, value)
    return a == b


def shares(pred: np.ndarray, gold: np.ndarray, num_classes: int, pool_prior: list[float] | None = None) -> dict[str, Any]:
    """Predicted-class and gold-class shares of the test split (a student or teacher that
    drifts toward some classes shows it here before macro-F1 does); with ``pool_prior`` (a
    pool resampled to a skewed prior), also the macro-F1 the test split would give if it had
    the pool's class mix (``macro_f1_pool_prior``)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    out: dict[str, Any] = {"pred_shares": [round(float(v), 4) for v in np.bincount(pred[pred >= 0], minlength=num_classes) / max(len(pred), 1)],
                           "gold_shares": [round(float(v), 4) for v in np.bincount(gold, minlength=num_classes) / max(len(gold), 1)]}
    if pool_prior is not None:
        out["macro_f1_pool_prior"] = reweighted_macro_f1(gold, pred, num_classes, pool_prior)
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._=" else "_" for ch in name)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def _quiet_transformers(progress: bool) -> None:
    """The bench trains dozens of students: drop transformers' per-model load reports."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if not progress:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


class Bench:
    def __init__(self, settings: BenchSettings, say: Callable[[str], None] = print) -> None:
        self.s = settings
        self.say = say
        self.records: list[dict[str, Any]] = []
        self.datasets: dict[str, BenchData] = {}
        self.teachers: dict[tuple[str, str], TeacherAnswers] = {}
        self.test_gold: dict[str, np.ndarray] = {}
        self.calibrators: dict[tuple[str, str], Calibrator] = {}

    # ------------------------------------------------------------------------------------
    def plan(self) -> list[Method]:
        s = self.s
        methods: list[Method] = []
        if "baselines" in s.suites or "efficiency" in s.suites:
            names = list(s.methods)
            if any(n.split("@")[0] == "random" or n.endswith(MATCHED) for n in names) and "llkd" not in names:
                names.append("llkd")  # random's keep rate and the matched budgets come from LLKD's run
            # the teacher row first, then llkd so random can read its data usage
            names.sort(key=lambda n: {"teacher": 0, "llkd": 1}.get(n, 2))
            methods += baseline_methods(names)
        if "noise" in s.suites and not any(m.name == "llkd" for m in methods):
            methods.append(Method("llkd", "llkd"))  # the clean reference of the noise rows
        if "sensitivity" in s.suites:
            have = {m.name for m in methods}
            methods += [m for m in sensitivity_methods(s.momenta, s.init_values) if m.name not in have]
        if "variants" in s.suites:
            have = {m.name for m in methods}
            methods += [m for m in variant_methods(s.variants) if m.name not in have]
        if "noise" in s.suites:
            methods += noise_methods([NoiseSpec.parse(n) for n in s.noise], s.noise_selectors)
        return methods

    def teacher_list(self) -> list[str]:
        # Suite "teacher_size" compares teachers; without it only the first teacher runs.
        return list(self.s.teachers) if "teacher_size" in self.s.suites else self.s.teachers[:1]

    def run(self) -> list[dict[str, Any]]:
        s = self.s
        _quiet_transformers(s.progress)
        methods = self.plan()
        for name in s.datasets:
            data = load_dataset(name, s.data_root, s.pool_size, s.test_size, s.split_seed, 0 if s.dev_from_pool else s.dev_size)
            if s.dev_from_pool:
                data = carve_dev_from_pool(data, s.dev_from_pool)
            if s.imbalance > 1:
                data = skew_pool(data, s.imbalance, s.imbalance_head)
            self.datasets[name] = data
            self.test_gold[name] = np.asarray(data.test.labels)
            self.say(f"[{name}] pool {len(data.pool)} (train side), test {len(data.test)}, dev {len(data.dev) if data.dev else 0} (train side, gold); split seed {s.split_seed}")
            for teacher in self.teacher_list():
                if all(m.kind == "supervised" for m in methods):
                    # gold-label bound only: no teacher answers needed (none asked, none required)
                    c = data.schema.num_labels
                    answers = TeacherAnswers(teacher, np.full((len(data.pool), c), np.nan), np.full((len(data.test), c), np.nan))
                    pool, test = answers.pool, answers.test
                else:
                    # The dev split's teacher answers are committed only when it was carved from
                    # the pool; from committed files alone a train-side dev split calibrates nothing.
                    wants_dev = CALIBRATORS.get(s.calibration).uses_dev and data.dev is not None
                    uses_dev = wants_dev and (s.dev_from_pool > 0 or s.teacher_source != "answers")
                    if wants_dev and not uses_dev:
                        self.say(f"[{name}] calibration {s.calibration} gets no dev split: its texts have no committed answers (use --dev-from-pool N)")
                    answers = get_answers(data, teacher, s.answers_dir, s.teacher_source, s.teacher_cache, s.progress, s.device, s.teacher_dtype,
                                          with_dev=uses_dev)
                    self.say(f"[{name}] teacher {teacher}: answers from {answers.source} in {answers.seconds:.1f}s")
                    dev = (answers.dev, data.dev.labels) if answers.dev is not None and data.dev is not None and data.dev.labels else None
                    pool, test, calibrator = calibrate(answers.pool, answers.test, s.calibration, dev)
                    self.calibrators[(name, teacher)] = calibrator
                    self.say(f"[{name}] {calibration_summary(calibrator)}")
                self.teachers[(name, teacher)] = answers
                for method in methods:
                    if teacher != self.teacher_list()[0] and method.suite != "baselines":
                        continue  # other teachers: the baseline table only
                    seeds = [s.seeds[0]] if method.kind == "teacher" else s.seeds
                    for seed in seeds:
                        rec = self.run_one(data, teacher, pool, test, method, seed)
                        self.records.append(rec)
        return self.records

    # ------------------------------------------------------------------------------------
    def run_dir(self, data: BenchData, teacher: str, method: Method, seed: int) -> Path:
        return self.s.output / "runs" / data.name / _slug(teacher) / _slug(method.name) / f"seed{seed}"

    def run_one(self, data: BenchData, teacher: str, pool: np.ndarray, test: np.ndarray, method: Method, seed: int) -> dict[str, Any]:
        s = self.s
        out = self.run_dir(data, teacher, method, seed)
        gold_pool = np.asarray(data.pool_gold)
        gold_test = np.asarray(data.test.labels)
        base: dict[str, Any] = {
            "dataset": data.name, "suite": method.suite, "method": method.name, "selector": method.selector,
            "kind": method.kind, "seed": seed, "teacher": teacher, "noise": method.noise.tag if method.noise else "",
            "pool_size": len(data.pool), "test_size": len(data.test), "epochs": s.epochs, "max_length": s.max_length,
            "calibration": s.calibration, "split_seed": s.split_seed, "pool_digest": data.provenance["pool_digest"],
            "test_digest": data.provenance["test_digest"], "student_mode": s.student_mode,
        }
        if method.kind == "teacher":
            # a text without an answer counts as wrong, never as a vote for class 0
            test_answered = ~np.isnan(test).any(axis=1)
            pred = np.where(test_answered, np.nan_to_num(test, nan=-1.0).argmax(axis=1), -1)
            rep = classification_report(gold_test, pred, data.schema.names)
            answered = ~np.isnan(pool).any(axis=1)
            pl = np.nan_to_num(pool, nan=-1.0).argmax(axis=1)
            c = data.schema.num_labels
            pool_rep = classification_report(gold_pool[answered], pl[answered], data.schema.names)
            true_prior = np.bincount(gold_pool, minlength=c) / len(gold_pool)
            calibrator = self.calibrators.get((data.name, teacher))
            prior = calibrator.class_prior if calibrator is not None else None
            rec = {**base, "accuracy": rep.accuracy, "macro_f1": rep.macro_f1, "data_usage": None,
                   "pool_label_acc": float((pl[answered] == gold_pool[answered]).mean()), "pool_macro_f1": pool_rep.macro_f1,
                   "pool_prior": true_prior.tolist(), "estimated_prior": None if prior is None else [float(v) for v in prior],
                   "prior_tv": None if prior is None else total_variation(prior, true_prior),
                   "calibration_state": None if calibrator is None else calibrator.state(), **shares(pred, gold_test, c, data.provenance.get("pool_prior")), "run_dir": str(out)}
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / "test_probs.npy", test.astype(np.float32))
            (out / "record.json").write_text(json.dumps(_jsonable(rec), indent=1))
            self.say(f"[{data.name}] {method.name:<28} acc {rep.accuracy:.3f}  macro-F1 {rep.macro_f1:.3f}")
            return rec

        selection: dict[str, Any] = {"selector": method.selector, **dict(method.selection)}
        if method.kind == "supervised":
            probs = np.eye(data.schema.num_labels)[gold_pool]
        else:
            probs = pool
        if method.noise is not None:
            probs, _ = inject_noise(probs, method.noise.resolved(gold_pool, data.schema.num_labels), seed=seed)
        epochs = s.epochs
        if method.selector == "random" or method.matched:
            llkd = self._llkd_record(data.name, teacher, seed)
            if llkd is None:
                raise RuntimeError(f"{data.name}: {method.name} needs LLKD's run for seed {seed}; run llkd first")
            # gradient share: LLKD's gradient samples / samples seen (what matched compute means)
            share = float(llkd["gradient_samples"]) / max(float(llkd["sample_steps_seen"]), 1.0)
            if method.selector == "random":
                rate = share if method.matched else float(llkd["data_usage"])
                selection["keep_rate"] = min(max(rate, 1.0 / len(data.pool)), 1.0)
            else:  # all@matched: the same gradient samples as LLKD, spent on fewer passes over everything
                epochs = s.epochs * max(share, 1.0 / len(data.pool))
        answered = ~np.isnan(probs).any(axis=1)
        pl = np.nan_to_num(probs, nan=-1.0).argmax(axis=1)
        pool_label_acc = float((pl[answered] == gold_pool[answered]).mean())
        student = {**s.student_dict(), "seed": seed, "output": str(out), "resume": False, "epochs": epochs}
        from llkd.config import LLKDConfig

        cfg = LLKDConfig.validated({"selection": selection, "student": student}, source="bench")
        # the resolved selection settings, defaults included: a changed default reruns the method
        resolved = cfg.selection.model_dump(mode="json")
        fingerprint = json.dumps(_jsonable({"student": student, "selection": resolved, "noise": base["noise"], "teacher": teacher,
                                            "calibration": s.calibration, "pool": base["pool_digest"], "test": base["test_digest"],
                                            "dev": data.provenance.get("dev_digest", "")}), sort_keys=True)
        rec_path = out / "record.json"
        if s.resume and rec_path.exists():
            old = json.loads(rec_path.read_text())
            if same_settings(old.get("fingerprint", ""), fingerprint):
                self.say(f"[{data.name}] {method.name:<28} seed {seed}: done before, reusing {rec_path}")
                return {**old, "run_dir": str(out), "reused": True}
        if out.exists():
            shutil.rmtree(out)
        from llkd.pipeline import train_and_evaluate

        t0 = time.perf_counter()
        calibrator = self.calibrators.get((data.name, teacher))
        prior = None if calibrator is None or method.kind == "supervised" else calibrator.class_prior
        splits = {"test": data.test, **({"dev": data.dev} if data.dev is not None and data.dev.labels else {})}
        student = train_and_evaluate(cfg, data.schema, data.pool, probs, class_prior=prior, evaluate_on=splits, progress=s.progress)
        result, meter, report, test_probs, emeter = student.result, student.train, student.reports["test"], student.probs["test"], student.evaluate["test"]
        np.save(out / "test_probs.npy", test_probs.astype(np.float32))
        dev_scores: dict[str, Any] = {}
        if "dev" in student.reports:
            dev_scores = {"dev_accuracy": student.reports["dev"].accuracy, "dev_macro_f1": student.reports["dev"].macro_f1}
        if not s.keep_models:
            shutil.rmtree(result.model_dir, ignore_errors=True)
            (out / "checkpoint.pt").unlink(missing_ok=True)
        rec = {
            **base, "accuracy": report.accuracy, "macro_f1": report.macro_f1, **dev_scores, **result.summary(),
            "data_usage": result.data_usage, "keep_rate": selection.get("keep_rate"), "epochs": epochs,
            "train_s": meter.seconds, "peak_rss_mb": meter.peak_rss_mb, "peak_gpu_mb": meter.peak_gpu_mb,
            "eval_s": emeter.seconds, "wall_s": time.perf_counter() - t0, "pool_label_acc": pool_label_acc,
            "selection": selection, "run_dir": str(out), "fingerprint": fingerprint,
            **shares(test_probs.argmax(axis=1), gold_test, data.schema.num_labels, data.provenance.get("pool_prior")),
        }
        rec_path.write_text(json.dumps(_jsonable(rec), indent=1))
        self.say(f"[{data.name}] {method.name:<28} seed {seed}: acc {report.accuracy:.3f}  macro-F1 {report.macro_f1:.3f}  "
                 f"data {result.data_usage:.1%}  grad samples {result.gradient_samples}  train {meter.seconds:.0f}s")
        return rec

    def _llkd_record(self, dataset: str, teacher: str, seed: int) -> dict[str, Any] | None:
        for r in self.records:
            if r["dataset"] == dataset and r["teacher"] == teacher and r["method"] == "llkd" and r["seed"] == seed and not r.get("noise"):
                return r
        return None

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"settings": _jsonable(asdict(self.s)), "datasets": {}}
        for name, data in self.datasets.items():
            teachers = {t: {"identity": a.identity, "answers_from": a.source, "seconds": round(a.seconds, 1)}
                        for (d, t), a in self.teachers.items() if d == name}
            out["datasets"][name] = {**data.provenance, "labels": data.schema.names,
                                     "verbalizers": [lab.answer for lab in data.schema.labels], "teachers": teachers}
        return out
