"""llkd bench: LLKD against every baseline, side by side, on the benchmark datasets."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, get_args

HELP = "Benchmark LLKD against every baseline (and the teacher and a supervised bound) on real datasets; writes tables, a CSV, plots and results.md."

# --quick: what CI runs (< 10 min on 2 CPU cores), from committed teacher answers only.
QUICK = {"datasets": ["csabstruct", "agnews"], "pool_size": 150, "test_size": 150, "seeds": [0], "epochs": 1.0, "max_length": 64}
# Fine-tuned tier (the default): 5 datasets x 10 methods x 3 seeds. The encoder is trained, so
# it costs ~1 s a step on 2 CPU cores: 3 epochs of a 300-text pool (57 steps) keep the grid
# near 1.5 h. With the pooled-embedding head and its larger head lr the student learns in that
# budget (docs/results.md, supervised bound table). Test splits: 1,000 texts (SST-2: its 872).
FULL = {"datasets": ["csabstruct", "agnews", "mag", "emotion", "sst2"], "pool_size": 300, "test_size": 1000, "dev_size": 500,
        "seeds": [0, 1, 2], "epochs": 3.0, "max_length": 64, "student_mode": "finetune"}
# Frozen tier (--tier frozen): the encoder runs once per text (embeddings cached on disk), only
# the head trains, so a run takes seconds: pools of 2,000, 20 epochs, 5 seeds.
FROZEN = {**FULL, "pool_size": 2000, "seeds": [0, 1, 2, 3, 4], "epochs": 20.0, "student_mode": "frozen"}
# Every other student and teacher flag defaults to, and is described by, the llkd config field
# it sets (runner.STUDENT_FIELDS / TEACHER_FIELDS). The presets' epochs and max_length (64, not
# llkd's 128) are the benchmark's own: they size each tier to its time budget.
DEFAULT_METHODS = ["teacher", "all", "soft", "random", "fixed", "teacher_adaptive", "student_adaptive", "freematch", "llkd", "supervised"]


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _library(dest: str, about: str = "") -> dict[str, Any]:
    """Default and help of the flag for BenchSettings field ``dest``, from the llkd config field
    it sets (``about`` in place of that field's description, where the benchmark says more)."""
    from llkd_bench.runner import STUDENT_FIELDS, TEACHER_FIELDS
    from llkd.config import StudentConfig, TeacherConfig

    if dest in STUDENT_FIELDS:  # --device sets both: the student's field speaks for it
        section, name, f = "student", STUDENT_FIELDS[dest], StudentConfig.model_fields[STUDENT_FIELDS[dest]]
    else:
        section, name, f = "teacher", TEACHER_FIELDS[dest], TeacherConfig.model_fields[TEACHER_FIELDS[dest]]
    default = "" if f.default is None else f"; default {f.default}"  # None: the description says what happens
    return {"dest": dest, "default": f.default, "help": f"{about or f.description} (llkd's {section}.{name}{default})"}


def _choices(section: Any, name: str) -> list[str]:
    return list(get_args(section.model_fields[name].annotation))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llkd_bench.answers import PACKAGED
    from llkd.config import DEVICE_HELP, StudentConfig, TeacherConfig
    from llkd.teacher.calibration import CALIBRATORS

    p.add_argument("--quick", action="store_true", help=f"Small CI run: {QUICK}; teacher answers from committed files only.")
    p.add_argument("--tier", choices=["finetune", "frozen"], default="finetune", help="Student tier: finetune (encoder trained; pool 300, 3 epochs, 3 seeds) or frozen (encoder frozen, cached embeddings; pool 2000, 20 epochs, 5 seeds).")
    p.add_argument("--suites", default="baselines,efficiency", help="Comma list of: baselines, sensitivity, efficiency, noise, teacher_size (or 'all').")
    p.add_argument("--datasets", help=f"Comma list (default: quick {QUICK['datasets']}, full {FULL['datasets']}).")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="Suite-1 methods: selectors plus 'teacher', 'supervised', and the compute-matched "
                   "'all@matched' (every sample, epochs x LLKD's gradient share) and 'random@matched' (a random subset at that share), "
                   "and LLKD variants written as in the variants suite (llkd+bal).")
    p.add_argument("--seeds", help="Comma list of seeds, or a count N for 0..N-1 (default: quick 1, full 3).")
    p.add_argument("--pool-size", type=int, help=f"Unlabeled pool texts per dataset (default: quick {QUICK['pool_size']}, full {FULL['pool_size']}).")
    p.add_argument("--test-size", type=int, help=f"Test texts per dataset (default: quick {QUICK['test_size']}, full {FULL['test_size']}).")
    p.add_argument("--epochs", type=float, help=f"Student epochs (default: quick {QUICK['epochs']:g}, full {FULL['epochs']:g}).")
    p.add_argument("--max-length", type=int, help=f"Student tokens per text (default: {FULL['max_length']}).")
    p.add_argument("--batch-size", type=int, **_library("batch_size"))
    p.add_argument("--lr", type=float, **_library("lr"))
    p.add_argument("--head-lr", type=float, **_library("head_lr"))
    # the benchmark has never offered float16 for its student
    p.add_argument("--student-dtype", choices=[c for c in _choices(StudentConfig, "dtype") if c != "float16"], **_library("student_dtype"))
    p.add_argument("--dev-size", type=int, help="Gold-labelled dev texts carved from the pool side, for choosing settings (default: quick 0, else 500).")
    p.add_argument("--student", **_library("student"))
    p.add_argument("--threads", type=int, **_library("threads"))
    p.add_argument("--device", **_library("device", f"Student and teacher device: {DEVICE_HELP}."))
    p.add_argument("--teacher", default="smollm2-135m", help="Teacher name(s), comma list; the teacher_size suite compares them, other suites use the first.")
    p.add_argument("--teacher-dtype", choices=_choices(TeacherConfig, "dtype"), **_library("teacher_dtype"))
    p.add_argument("--calibration", choices=[n for n in CALIBRATORS.names() if n != "contextual"],
                   **_library("calibration", "Teacher calibration before selection, fitted on the pool (and the dev split's answers, for auto and prior) and applied to every split "
                              "(llkd.teacher.calibration; contextual is not offered: the benchmark keeps no content-free answer)."))
    p.add_argument("--dev-from-pool", type=int, default=0, help="Carve the dev split from the last N pool texts instead of the train side's end (their teacher answers are committed with the pool's), so calibration can use it.")
    p.add_argument("--imbalance", type=float, default=0.0, help="Stress: resample the pool (and dev) to a long-tailed prior with this imbalance ratio (largest / smallest class, e.g. 10 or 50); the test split keeps its own distribution.")
    p.add_argument("--imbalance-head", type=int, default=0, help="Under --imbalance: the index of the largest class; the others follow in schema order, each smaller.")
    p.add_argument("--split-seed", type=int, default=0, help="Seed that fixes the pool/test splits.")
    p.add_argument("--data-root", type=Path, help="Shared data folder (default: $LLKD_DATA_ROOT or ../shared/data).")
    p.add_argument("--answers", type=Path, default=PACKAGED, help="Folder of committed teacher-answer files (<dataset>.<teacher>.jsonl.gz).")
    p.add_argument("--teacher-source", choices=["auto", "answers", "cache"], help="answers: committed files only (never runs a teacher; quick default); auto: files, then the teacher cache / teacher for the rest (full default); cache: ignore the files.")
    p.add_argument("--teacher-cache", type=Path, help="Teacher answer cache (SQLite); default the llkd cache.")
    p.add_argument("--export-answers", action="store_true", help="Write the cached teacher answers for the chosen datasets and sizes into --answers, then exit (never asks the teacher).")
    p.add_argument("--momenta", default="0.5,0.9,0.99", help="Sensitivity suite: momentum grid.")
    p.add_argument("--init-values", default="0.3,0.5,0.7", help="Sensitivity suite: constant threshold initial values (vs first_batch).")
    p.add_argument("--noise", default="uniform:0.2,uniform:0.4,biased:0.2", help="Noise suite: specs uniform:RATE or biased:RATE[:CLASS].")
    p.add_argument("--noise-selectors", default="all,fixed,llkd", help="Noise suite: selectors (or LLKD variants such as llkd+lu+batch) trained on the noisy teacher.")
    p.add_argument("--variants", default=None, help="Variants suite: comma list of LLKD variants, tags joined by '+' (lu, batch, bal, floor2, floor4, soft, entropy, ema); default: the built-in grid.")
    p.add_argument("--output", type=Path, default=Path("runs/bench"), help="Output folder.")
    p.add_argument("--no-resume", action="store_true", help="Rerun runs whose record.json exists with the same settings.")
    p.add_argument("--keep-models", action="store_true", help="Keep every trained student (default: delete after evaluation).")
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _settings(args: argparse.Namespace):  # noqa: ANN202
    from llkd_bench.datasets import default_data_root
    from llkd_bench.runner import SUITES, BenchSettings
    from llkd.config import ConfigError

    preset = QUICK if args.quick else (FROZEN if args.tier == "frozen" else FULL)
    suites = SUITES if args.suites == "all" else _csv(args.suites)
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ConfigError(f"unknown suite(s) {sorted(unknown)}; known: {', '.join(SUITES)}")
    if args.seeds is None:
        seeds = list(preset["seeds"])
    elif args.seeds.isdigit() and "," not in args.seeds:
        if int(args.seeds) == 0:  # a count of 0 would run nothing and still write an empty table
            raise ConfigError("--seeds 0 is a count of zero seeds; pass a count >= 1 (--seeds 3 = 0,1,2) or a list (--seeds 0, = seed 0 only)")
        seeds = list(range(int(args.seeds)))
    else:
        try:
            seeds = [int(x) for x in _csv(args.seeds)]
        except ValueError:
            raise ConfigError(f"--seeds must be a count or a comma list of integers, not {args.seeds!r}") from None
        if not seeds:
            raise ConfigError("--seeds names no seed")
    from llkd_bench.runner import DEFAULT_VARIANTS, MATCHED, REFERENCES, VARIANT_TAG_HELP, selector_and_overrides
    from llkd.selection.selectors import SELECTORS

    methods = _csv(args.methods)
    for m in methods:
        if m.startswith("llkd+"):
            try:  # the variants suite's own parser, which names the unknown tag
                selector_and_overrides(m)
            except ValueError as e:
                raise ConfigError(f"--methods: {e}") from None
    known = set(REFERENCES) | set(SELECTORS.names()) | {f"all{MATCHED}", f"random{MATCHED}"}
    bad = [m for m in methods if m not in known and not m.startswith("llkd+")]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; known: {', '.join(sorted(known))}, and llkd+<tags> with tags from {VARIANT_TAG_HELP}")
    return BenchSettings(
        datasets=_csv(args.datasets) if args.datasets else list(preset["datasets"]),
        suites=suites,
        methods=methods,
        seeds=seeds,
        teachers=_csv(args.teacher),
        pool_size=args.pool_size or preset["pool_size"],
        test_size=args.test_size or preset["test_size"],
        epochs=args.epochs or preset["epochs"],
        max_length=args.max_length or preset["max_length"],
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        student_mode="frozen" if args.tier == "frozen" else "finetune",
        student_dtype=args.student_dtype,
        dev_size=args.dev_size if args.dev_size is not None else int(preset.get("dev_size", 0)),
        student=args.student,
        threads=args.threads,
        device=args.device,
        teacher_dtype=args.teacher_dtype,
        calibration=args.calibration,
        dev_from_pool=args.dev_from_pool,
        imbalance=args.imbalance,
        imbalance_head=args.imbalance_head,
        split_seed=args.split_seed,
        data_root=args.data_root or default_data_root(),
        answers_dir=args.answers,
        teacher_source=args.teacher_source or ("answers" if args.quick else "auto"),
        teacher_cache=args.teacher_cache,
        output=args.output,
        momenta=[float(x) for x in _csv(args.momenta)],
        init_values=[float(x) for x in _csv(args.init_values)],
        noise=_csv(args.noise),
        noise_selectors=_csv(args.noise_selectors),
        variants=_csv(args.variants) if args.variants else list(DEFAULT_VARIANTS),
        progress=not args.no_progress,
        resume=not args.no_resume,
        keep_models=args.keep_models,
        quick=args.quick,
    )


def run(args: argparse.Namespace) -> int:
    from llkd_bench.datasets import load_dataset

    s = _settings(args)
    if args.export_answers:
        from llkd_bench.teacher import export_answers

        for name in s.datasets:
            data = load_dataset(name, s.data_root, s.pool_size, s.test_size, s.split_seed, s.dev_size)
            for teacher in s.teachers:
                path, have, missing = export_answers(data, teacher, s.answers_dir, s.teacher_cache, s.device, s.teacher_dtype)
                size = path.stat().st_size if path.exists() else 0
                print(f"{name} / {teacher}: {have} answers for this split written to {path} ({size / 1024:.0f} KiB)"
                      + (f"; {missing} texts have no cached answer yet" if missing else ""))
        return 0

    from llkd_bench.results import write_outputs
    from llkd_bench.runner import Bench

    started = time.time()
    command = "llkd " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("llkd") else "llkd bench (called from Python)"
    bench = Bench(s)
    bench.run()
    path = write_outputs(bench, command, started, time.time() - started)
    print(f"results: {path}  (table per dataset in {s.output / 'tables'}, every run in {s.output / 'runs.csv'})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
