"""llkd label: pseudo-label texts with the teacher into the on-disk cache (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llkd import entity_pipeline
from llkd.config import add_config_flags, config_from_args
from llkd.data.errors import DataError
from llkd.data.export import export_format, write_answers
from llkd.pipeline import load_schema, load_split, pseudo_label
from llkd.preflight import check_teacher

HELP = "Pseudo-label texts with the teacher; answers are cached on disk, so a re-run asks only for missing texts."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["pool", "test", "dev"], default="pool", help="Which data file to label.")
    p.add_argument("--export", type=Path, help="Also write the answers for these texts: a .jsonl, .csv or .parquet file, or a folder (a path "
                   "without a suffix) holding a Hugging Face Dataset written with save_to_disk (needs llkd[hf]).")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_flags(p, ("data", "teacher"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.data.task == "entities":
        return entity_pipeline.label(cfg, args)
    if args.export:
        try:
            export_format(args.export)  # a bad --export costs nothing, not a teacher run
        except DataError as e:
            raise DataError(f"--export {e}") from e
    check_teacher(cfg.teacher)  # backend, template, device: before the data and the model load
    schema = load_schema(cfg.data)
    texts = load_split(cfg.data, args.split, schema)
    res = pseudo_label(cfg.teacher, schema, texts, progress=not args.no_progress)
    assert res.meter is not None
    print(f"{len(texts)} texts: {res.n_cached} from cache, {res.n_asked} asked, {len(res.failures)} failed; "
          f"{res.meter.seconds:.1f}s, peak {res.meter.peak_rss_mb:.0f} MB; cache {cfg.teacher.cache_path()}")
    for row, reason in list(res.failures.items())[:20]:
        print(f"  failed: id={texts.ids[row]}: {reason}")
    if args.export:
        rows = res.to_records()
        fmt = write_answers(rows, args.export)
        print(f"exported {len(rows)} answers to {args.export} ({fmt})")
    return 1 if res.failures else 0
