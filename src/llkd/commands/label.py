"""llkd label: pseudo-label texts with the teacher into the on-disk cache (resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llkd.config import add_config_flags, config_from_args
from llkd.pipeline import load_schema, load_split, pseudo_label

HELP = "Pseudo-label texts with the teacher; answers are cached on disk, so a re-run asks only for missing texts."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["pool", "test", "dev"], default="pool", help="Which data file to label.")
    p.add_argument("--export", type=Path, help="Also write the answers for these texts to .jsonl or .parquet.")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_flags(p, ("data", "teacher"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    schema = load_schema(cfg.data)
    texts = load_split(cfg.data, args.split, schema)
    run_ = pseudo_label(cfg.teacher, schema, texts, progress=not args.no_progress)
    res = run_.labels
    print(f"{len(texts)} texts: {res.n_cached} from cache, {res.n_asked} asked, {len(res.failures)} failed; "
          f"{run_.meter.seconds:.1f}s, peak {run_.meter.peak_rss_mb:.0f} MB; cache {cfg.teacher.cache_path()}")
    for row, reason in list(res.failures.items())[:20]:
        print(f"  failed: id={texts.ids[row]}: {reason}")
    if args.export:
        rows = [
            {"id": texts.ids[i], "text": texts.texts[i],
             "pseudo_label": schema.names[int(res.pseudo_labels[i])] if res.answered[i] else None,
             "confidence": float(res.confidence[i]) if res.answered[i] else None,
             "probs": res.probs[i].tolist() if res.answered[i] else None,
             "method": res.methods[i] or None,
             "failure": res.failures.get(i)}
            for i in range(len(texts))
        ]
        args.export.parent.mkdir(parents=True, exist_ok=True)
        if args.export.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), args.export)
        else:
            with open(args.export, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        print(f"exported {len(rows)} answers to {args.export}")
    return 1 if res.failures else 0
