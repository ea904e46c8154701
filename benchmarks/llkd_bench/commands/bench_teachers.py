"""llkd bench-teachers: the packaged teachers on the benchmark datasets (accuracy, macro-F1,
calibration, speed), merged into one JSON file and written as a markdown table."""

from __future__ import annotations

import argparse
import datetime
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

HELP = ("Measure teachers zero-shot on the benchmark datasets: accuracy, macro-F1, ECE and worst over-prediction, raw "
        "and under every calibrator (each fitted on the pool answers), and labelling speed; answers come from the "
        "committed answer files and the teacher cache (the teacher is asked only for what is missing; never with "
        "--answers-only); results merge into a JSON file and a markdown table.")

DEFAULT_TEACHERS = "smollm2-135m,gemma3-270m,qwen2.5-1.5b"
DEFAULT_DATASETS = "csabstruct,agnews,mag,emotion,sst2"


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llkd_bench.answers import PACKAGED

    p.add_argument("--teachers", default=DEFAULT_TEACHERS, help="Comma list of teachers (packaged names, HF folders or GGUF files).")
    p.add_argument("--datasets", default=DEFAULT_DATASETS, help="Comma list of benchmark datasets.")
    p.add_argument("--test-size", type=int, default=500, help="Test texts per dataset (a prefix of the fixed test split).")
    p.add_argument("--test-size-for", metavar="T=N,...", help="Per-teacher test sizes, e.g. qwen2.5-1.5b=200.")
    p.add_argument("--pool-size", type=int, default=300, help="Unlabeled pool texts per dataset: what every calibrator is fitted on.")
    p.add_argument("--pool-size-for", metavar="T=N,...", help="Per-teacher pool sizes, e.g. qwen2.5-1.5b=100.")
    p.add_argument("--split-seed", type=int, default=0, help="Seed that fixes the pool/test splits (as llkd bench).")
    p.add_argument("--data-root", type=Path, help="Shared data folder (default: $LLKD_DATA_ROOT or ../shared/data).")
    p.add_argument("--answers", type=Path, default=PACKAGED, help="Folder of committed teacher-answer files, read before the cache.")
    p.add_argument("--no-answer-files", action="store_true", help="Ignore committed answer files (cache, then teacher).")
    p.add_argument("--answers-only", action="store_true",
                   help="Score from the committed answer files alone: no teacher is loaded or asked; the content-free answer "
                        "comes from the teacher cache or the cell already in the JSON, speed is carried over from that cell; "
                        "cells without an answer file are left as they are.")
    p.add_argument("--teacher-cache", type=Path, help="Teacher answer cache (SQLite); default the llkd cache.")
    p.add_argument("--teacher-batch-size", type=int, default=16, help="Texts per teacher forward pass.")
    p.add_argument("--teacher-batch-size-for", metavar="T=N,...", help="Per-teacher batch sizes, e.g. qwen2.5-1.5b=4.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda.")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    p.add_argument("--speed-texts", type=int, default=32, help="Fewest texts a speed figure is measured on (see docs).")
    p.add_argument("--bins", type=int, default=10, help="Confidence bins of the ECE.")
    p.add_argument("--output", type=Path, default=Path("docs/teachers.md"), help="Markdown table (notes below its marker are kept).")
    p.add_argument("--json", type=Path, default=Path("runs/teachers.json"), help="Results file; existing cells are kept and merged.")
    p.add_argument("--rerun", action="store_true", help="Measure cells again even if the JSON holds them with the same sizes.")
    p.add_argument("--fresh", action="store_true", help="Start a new JSON instead of merging into the existing one.")
    p.add_argument("--table-only", action="store_true", help="Only rewrite the markdown from the JSON.")
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _command(args: argparse.Namespace) -> str:
    if sys.argv[1:2] == ["bench-teachers"]:
        return "llkd bench-teachers " + shlex.join(sys.argv[2:])
    parts = ["llkd", "bench-teachers", "--teachers", args.teachers, "--datasets", args.datasets, "--test-size", str(args.test_size)]
    for flag in ("test_size_for", "pool_size_for", "teacher_batch_size_for"):
        if getattr(args, flag):
            parts += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    parts += ["--pool-size", str(args.pool_size), "--output", str(args.output), "--json", str(args.json)]
    if args.answers_only:
        parts.append("--answers-only")
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from llkd_bench.teachers import (VARIANTS, cell_key, machine_info, measure_cell, measure_cell_from_answers, note_order,
                                     parse_sizes, read_results, requested_cells, write_markdown, write_results)
    from llkd.config import ConfigError

    try:
        if args.answers_only and args.no_answer_files:
            raise ValueError("--answers-only and --no-answer-files exclude each other")
        teachers, datasets = _csv(args.teachers), _csv(args.datasets)
        cells = requested_cells(teachers, datasets)
        test_for = parse_sizes(args.test_size_for, "test size")
        pool_for = parse_sizes(args.pool_size_for, "pool size")
        batch_for = parse_sizes(args.teacher_batch_size_for, "batch size")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    results = read_results(None if args.fresh else args.json)
    if args.table_only:
        write_markdown(args.output, results)
        print(f"wrote {args.output} from {args.json} ({len(results['cells'])} cells)")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    note_order(results, teachers, datasets)
    run_rec: dict[str, Any] = {"command": _command(args), "date": datetime.date.today().isoformat(),
                               "started": datetime.datetime.now().isoformat(timespec="seconds"),
                               "machine": machine_info(), "cells": [], "wall_s": 0.0}
    results["runs"].append(run_rec)
    t_start = time.perf_counter()

    def save() -> None:
        run_rec["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_results(args.json, results)
        write_markdown(args.output, results)

    def on_term(signum: int, frame: Any) -> None:  # SIGTERM: stop like Ctrl-C (finished cells are saved)
        raise KeyboardInterrupt

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGTERM, on_term)
    failed = 0
    try:
        for teacher, dataset in cells:
            test_size = test_for.get(teacher, args.test_size)
            pool_size = pool_for.get(teacher, args.pool_size)
            prev = results["cells"].get(cell_key(teacher, dataset))
            if (prev and not args.rerun and prev["test_size_requested"] == test_size and prev["pool_size_requested"] == pool_size
                    and prev["split_seed"] == args.split_seed):
                print(f"{teacher} / {dataset}: in {args.json} already (use --rerun to measure again)", flush=True)
                continue
            print(f"{teacher} / {dataset}: test {test_size}, pool {pool_size} ...", file=sys.stderr, flush=True)
            if args.answers_only:
                cell = measure_cell_from_answers(
                    teacher, dataset, data_root=args.data_root, test_size=test_size, pool_size=pool_size,
                    split_seed=args.split_seed, answers_dir=args.answers, cache=args.teacher_cache, previous=prev,
                    bins=args.bins, log=log,
                )
                if cell is None:
                    continue
            else:
                cell = measure_cell(
                    teacher, dataset, data_root=args.data_root, test_size=test_size, pool_size=pool_size,
                    split_seed=args.split_seed, answers_dir=None if args.no_answer_files else args.answers,
                    cache=args.teacher_cache, batch_size=batch_for.get(teacher, args.teacher_batch_size), device=args.device,
                    speed_texts=args.speed_texts, bins=args.bins, progress=not args.no_progress, log=log,
                )
            cell["test_size_requested"], cell["pool_size_requested"] = test_size, pool_size
            cell["command"] = run_rec["command"]
            results["cells"][cell_key(teacher, dataset)] = cell
            run_rec["cells"].append(cell_key(teacher, dataset))
            failed += cell["failures"]
            sp = cell["speed"]

            def f(v: dict | None) -> str:
                if not v or v.get("accuracy") is None:
                    return "-"
                over = "inf" if v["over_prediction"] is None else f"{v['over_prediction']:.2f}"
                return f"{v['accuracy']:.3f}/{v['macro_f1']:.3f}/x{over}"

            calibrators = " ".join(f"{name} {f(cell['scores'][name])}" for name in VARIANTS)
            print(f"{teacher} / {dataset}: n={cell['test_answered']} acc/F1/worst over-prediction {calibrators}; "
                  f"{sp['samples_per_s'] or 0:.2f} texts/s ({sp['source']}, {sp.get('texts', 0)} texts); "
                  f"asked {cell['sources']['teacher']}, cache {cell['sources']['cache']}, file {cell['sources']['answer_file']}; "
                  f"{cell['seconds']['total']:.0f}s", flush=True)
            save()
    except KeyboardInterrupt:
        save()
        print(f"stopped; {len(run_rec['cells'])} cell(s) of this run saved to {args.json} and {args.output} (answers are cached: a re-run resumes)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    save()
    print(f"wrote {args.json} and {args.output}")
    return 1 if failed else 0
