#!/usr/bin/env python
"""Usage: python benchmarks/scripts/teacher_filter.py                    (committed answers only; no teacher runs)
       python benchmarks/scripts/teacher_filter.py per-class TEACHER POOL DATASET [DATASET ...]

How informative is the teacher's confidence? Pool label accuracy of the rows LLKD's teacher
side keeps (confidence >= its pseudo-label class's mean confidence, the first-batch/EMA level
over the whole pool) vs all rows; balanced calibration fitted on the pool.

`per-class`: the same per pseudo-label class, next to what `fixed` (confidence >= 0.7) keeps:
where the teacher over-predicts a class, a class-wise threshold still keeps its top half."""
import sys
from pathlib import Path

import numpy as np

from llkd_bench.answers import PACKAGED
from llkd_bench.datasets import load_dataset
from llkd_bench.runner import calibrate
from llkd_bench.teacher import get_answers


def pool_answers(teacher: str, pool_size: int, d: str):
    data = load_dataset(d, None, pool_size, 1000, 0)
    a = get_answers(data, teacher, PACKAGED, "answers", progress=False)
    pool, _, _ = calibrate(a.pool, a.test, "balanced")
    return data, pool


def class_mean_keep(y: np.ndarray, c: np.ndarray, num_classes: int) -> np.ndarray:
    keep = np.zeros(len(y), bool)
    for k in range(num_classes):
        m = y == k
        if m.any():
            keep |= m & (c >= c[m].mean())
    return keep


def overview() -> None:
    for teacher, pool_size in [("qwen2.5-1.5b", 300), ("smollm2-135m", 2000), ("smollm2-135m", 300)]:
        for d in ["csabstruct", "agnews", "mag", "emotion", "sst2"]:
            try:
                data, pool = pool_answers(teacher, pool_size, d)
            except Exception:
                print(teacher, d, "no answers")
                continue
            ok = ~np.isnan(pool).any(1)
            if ok.mean() < 0.99:
                print(teacher, d, "missing", int((~ok).sum()))
                continue
            y, c, g = pool.argmax(1), pool.max(1), np.asarray(data.pool_gold)
            keep = class_mean_keep(y, c, pool.shape[1])
            print(f"{teacher:14} pool {pool_size:5} {d:10} label acc all {np.mean(y==g):.3f} | kept {keep.mean():.0%} acc {np.mean(y[keep]==g[keep]):.3f} | dropped acc {np.mean(y[~keep]==g[~keep]):.3f}")


def per_class(teacher: str, pool_size: int, datasets: list[str]) -> None:
    print("| dataset | pseudo-label | gold share | predicted share | accuracy | class-mean keeps (acc) | fixed 0.7 keeps (acc) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for d in datasets:
        data, pool = pool_answers(teacher, pool_size, d)
        y, c, g = pool.argmax(1), pool.max(1), np.asarray(data.pool_gold)
        cm, fx = class_mean_keep(y, c, pool.shape[1]), c >= 0.7
        acc = lambda m: f"{np.mean(g[m] == y[m]):.2f}" if m.any() else "-"  # noqa: E731
        for k, name in enumerate(data.schema.names):
            m = y == k
            print(f"| {d} | {name} | {np.mean(g == k):.2f} | {m.mean():.2f} | {acc(m)} | {int((m & cm).sum())} ({acc(m & cm)}) | {int((m & fx).sum())} ({acc(m & fx)}) |")
        print(f"| {d} | all | | | {acc(np.ones(len(y), bool))} | {int(cm.sum())} ({acc(cm)}) | {int(fx.sum())} ({acc(fx)}) |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["per-class"]:
        per_class(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        overview()
