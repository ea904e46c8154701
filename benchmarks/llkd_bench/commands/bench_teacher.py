"""llkd bench-teacher: labelling speed of the local teacher, naive generate loop vs per-label
scoring without reuse vs llkd's scoring, on the same model, texts and threads."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from llkd.config import ConfigError, add_config_flags, config_from_args
from llkd.pipeline import bundled_demo_data, load_schema, load_split
from llkd.preflight import check_teacher

HELP = ("Benchmark the local (hf) teacher: texts/s of a naive chat-template + generate loop, of per-label "
        "scoring without KV reuse and of llkd's scoring, agreement of their answers, and effective GFLOP/s "
        "against this machine's measured fp32/bf16 matmul peaks; or, with --dtypes, llkd's scoring in each dtype side by side.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texts", type=int, default=200, help="Number of texts (the first N of the split).")
    p.add_argument("--batch-size", type=int, help="Batch size of llkd's scoring (default: the teacher's batch size).")
    p.add_argument("--skip-naive", action="store_true", help="Leave out (a), the generate loop.")
    p.add_argument("--skip-reference", action="store_true", help="Leave out (b), per-label scoring without reuse (slow).")
    p.add_argument("--naive-max-new-tokens", type=int,
                   help="Tokens (a) may generate (default: the longest verbalizer's token count + 2).")
    p.add_argument("--threads", type=int, help="torch CPU threads for every method (default: torch's current count).")
    p.add_argument("--peak-size", type=int, default=2048, help="Matrix size of the matmul peak measurements (fp32 and bf16).")
    p.add_argument("--dtypes", metavar="LIST",
                   help="Comma-separated teacher dtypes, e.g. float32,bfloat16: instead of (a)/(b)/(c), run llkd's scoring with the model "
                        "in each dtype on the same texts and report texts/s per dtype, the ratio to the first and the agreement of their answers.")
    p.add_argument("--rounds", type=int, default=2, help="With --dtypes: timed rounds per dtype, interleaved (the best counts).")
    p.add_argument("--json", type=Path, metavar="OUT", help="Write every number to this JSON file.")
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    add_config_flags(p, ("data", "teacher"))


def bench_texts(cfg: Any, n: int) -> tuple[Any, Any, str]:
    """(schema, TextSet of at most n texts, description): the test split if given, else the
    pool, else the bundled AG News test slice."""
    data = cfg.data
    if data.test is None and data.pool is None:
        data = bundled_demo_data()
    schema = load_schema(data)
    which = "test" if data.test is not None else "pool"
    texts = load_split(data, which, schema)
    texts = texts.subset(range(min(n, len(texts))))
    return schema, texts, f"{getattr(data, which)} ({which})"


def run(args: argparse.Namespace) -> int:
    import torch

    from llkd_bench.teacher_speed import bench_teacher, format_report
    from llkd.teacher.hf import HFTeacher
    from llkd.teacher.labeling import build_teacher

    if args.texts < 1:
        raise ConfigError("--texts must be at least 1")
    dtypes = parse_dtypes(args.dtypes) if args.dtypes else None
    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if cfg.teacher.backend != "hf":
        raise ConfigError(f"bench-teacher measures the local hf backend, not '{cfg.teacher.backend}'")
    check_teacher(cfg.teacher)
    schema, texts, source = bench_texts(cfg, args.texts)
    batch_size = args.batch_size or cfg.teacher.batch_size

    def log(msg: str) -> None:
        print(f"bench-teacher: {msg}", file=sys.stderr, flush=True)

    if dtypes:
        return run_dtypes(args, cfg, schema, texts, source, batch_size, dtypes, log)
    teacher = build_teacher(cfg.teacher, schema)
    assert isinstance(teacher, HFTeacher)

    log(f"{len(texts)} texts from {source}; model {cfg.teacher.model} on {teacher.device}, {torch.get_num_threads()} threads")
    res = bench_teacher(teacher, texts.texts, texts.labels, batch_size=batch_size, naive=not args.skip_naive,
                        reference=not args.skip_reference, peak_size=args.peak_size,
                        naive_max_new_tokens=args.naive_max_new_tokens,
                        progress=not args.no_progress, log=log)
    _finish(args, res, source, format_report(res))
    ok = res["agreement"].get("reference_vs_llkd", {}).get("identical", True)
    return 0 if ok else 1


def parse_dtypes(value: str) -> list[str]:
    from llkd.hardware import DTYPES

    dtypes = list(dict.fromkeys(d.strip() for d in value.split(",") if d.strip()))
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ConfigError(f"--dtypes: unknown dtype(s) {', '.join(unknown)}; choose from {', '.join(DTYPES)}")
    if len(dtypes) < 2:
        raise ConfigError("--dtypes needs at least two dtypes to compare, e.g. float32,bfloat16")
    return dtypes


def run_dtypes(args: argparse.Namespace, cfg: Any, schema: Any, texts: Any, source: str, batch_size: int, dtypes: list[str],
               log: Any) -> int:
    """The same teacher loaded once per dtype, llkd's scoring timed side by side."""
    import torch

    from llkd_bench.teacher_speed import compare_dtypes, format_dtype_report
    from llkd.teacher.hf import HFTeacher
    from llkd.teacher.labeling import build_teacher

    teachers: dict[str, HFTeacher] = {}
    for d in dtypes:
        t = build_teacher(cfg.teacher.model_copy(update={"dtype": d}), schema)
        assert isinstance(t, HFTeacher)
        teachers[d] = t
    log(f"{len(texts)} texts from {source}; model {cfg.teacher.model} in {', '.join(dtypes)} on {teachers[dtypes[0]].device}, "
        f"{torch.get_num_threads()} threads")
    res = compare_dtypes(teachers, texts.texts, texts.labels, batch_size=batch_size, rounds=args.rounds,
                         peak_size=args.peak_size, log=log)
    _finish(args, res, source, format_dtype_report(res))
    return 0


def _finish(args: argparse.Namespace, res: dict[str, Any], source: str, report: str) -> None:
    res["source"] = source
    res["date"] = datetime.date.today().isoformat()
    res["command"] = "llkd bench-teacher " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench-teacher"] else None
    print(f"data: {source}")
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"numbers written to {args.json}")
