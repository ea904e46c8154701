#!/usr/bin/env python
"""Usage: python scripts/teacher_filter.py (committed answers only; no teacher runs).

How informative is the teacher's confidence? Pool label accuracy of the rows LLKD's teacher
side keeps (confidence >= its pseudo-label class's mean confidence, the first-batch/EMA level
over the whole pool) vs all rows; balanced calibration fitted on the pool."""
import numpy as np
from llkd.bench.datasets import load_dataset
from llkd.bench.teacher import get_answers
from llkd.bench.runner import calibrate
from pathlib import Path

for teacher, pool_size in [("qwen2.5-1.5b", 300), ("smollm2-135m", 2000), ("smollm2-135m", 300)]:
    for d in ["csabstruct", "agnews", "mag", "emotion", "sst2"]:
        data = load_dataset(d, None, pool_size, 1000, 0)
        try:
            a = get_answers(data, teacher, Path("src/llkd/bench/answers"), "answers", progress=False)
        except Exception as e:
            print(teacher, d, "no answers"); continue
        pool, _ = calibrate(a.pool, a.test, "balanced")
        ok = ~np.isnan(pool).any(1)
        if ok.mean() < 0.99:
            print(teacher, d, "missing", int((~ok).sum())); continue
        y = pool.argmax(1); c = pool.max(1); g = np.asarray(data.pool_gold)
        keep = np.zeros(len(y), bool)
        for k in range(pool.shape[1]):
            m = y == k
            if m.any(): keep |= m & (c >= c[m].mean())
        print(f"{teacher:14} pool {pool_size:5} {d:10} label acc all {np.mean(y==g):.3f} | kept {keep.mean():.0%} acc {np.mean(y[keep]==g[keep]):.3f} | dropped acc {np.mean(y[~keep]==g[~keep]):.3f}")
