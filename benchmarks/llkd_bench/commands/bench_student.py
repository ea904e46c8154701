"""llkd bench-student: student throughput per compute dtype, fp32/bf16 agreement, frozen-mode run time."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HELP = "Measure the student side by side in one run: fine-tune and inference samples/s in fp32 and bf16, their prediction agreement, and a frozen-mode training run on a 2,000-text pool (cold and warm embedding cache)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llkd_bench.answers import PACKAGED

    p.add_argument("--dataset", default="agnews", help="Benchmark dataset whose texts are used.")
    p.add_argument("--texts", type=int, default=512, help="Texts for the inference measurement.")
    p.add_argument("--train-steps", type=int, default=20, help="Timed fine-tuning steps per dtype.")
    p.add_argument("--frozen-pool", type=int, default=2000, help="Pool size of the frozen-mode run.")
    p.add_argument("--answers", type=Path, default=PACKAGED, help="Committed teacher answers (SmolLM2) for the frozen run.")
    p.add_argument("--data-root", type=Path, help="Shared data folder (default: $LLKD_DATA_ROOT or ../shared/data).")
    p.add_argument("--threads", type=int, help="CPU threads for torch.")
    p.add_argument("--json", type=Path, help="Also write the raw numbers here.")
    p.add_argument("--markdown", type=Path, help="Append the markdown section to this file.")


def run(args: argparse.Namespace) -> int:
    from llkd_bench.student_speed import markdown, measure

    res = measure(args.dataset, args.texts, args.train_steps, frozen_pool=args.frozen_pool, data_root=args.data_root, answers_dir=args.answers, threads=args.threads)
    text = markdown(res, "llkd " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
    return 0
