"""llkd bench-budget: budget curves of budgeted distillation, every acquisition strategy."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("Budget curves: llkd distill with every acquisition strategy against the full-pool llkd student, "
        "committed answers revealed only when asked (frozen tier).")


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llkd.acquisition import ACQUISITIONS
    from llkd_bench.answers import PACKAGED
    from llkd_bench.budget import BUDGETS

    p.add_argument("--datasets", default="agnews,csabstruct,emotion,mag,sst2", help="Comma-separated benchmark datasets.")
    p.add_argument("--strategies", default=",".join(ACQUISITIONS.names()), help="Comma-separated acquisition strategies.")
    p.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated seeds.")
    p.add_argument("--teacher", default="qwen2.5-1.5b", help="Teacher whose committed answers stand in for it.")
    p.add_argument("--pool-size", type=int, default=2000, help="Pool before the dev split is carved from its end.")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--dev-from-pool", type=int, default=500, help="The last N pool texts become the labelled dev split.")
    p.add_argument("--budgets", default=",".join(BUDGETS), help="The curve's points (shares or counts); the first is the seed round.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--answers", type=Path, default=PACKAGED)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--output", type=Path, default=Path("runs/budget"))


def run(args: argparse.Namespace) -> int:
    from llkd_bench.budget import BudgetSettings, run_grid

    s = BudgetSettings(_list(args.datasets), _list(args.strategies), [int(x) for x in _list(args.seeds)], teacher=args.teacher,
                       pool_size=args.pool_size, test_size=args.test_size, dev_from_pool=args.dev_from_pool, threads=args.threads,
                       budgets=_list(args.budgets), output=args.output, answers_dir=args.answers, data_root=args.data_root)
    records = run_grid(s)
    print(f"{len(records)} records under {s.output}")
    return 0
