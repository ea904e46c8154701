"""Student speed, measured side by side in one process: fine-tuning and inference throughput
per compute dtype (fp32 vs bf16 autocast), the agreement of their predictions, and the
wall time of a frozen-mode training run on a benchmark pool with cold and warm embedding
caches. Ratios inside one run are the meaningful numbers on a shared machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llkd.hardware import cpu_has_native_bf16, cpu_summary


def _train_throughput(model: Any, tokenizer: Any, texts: list[str], labels: list[int], dtype: str, steps: int, batch: int, max_length: int) -> float:
    from llkd.student.model import autocast, collate, encode

    device = next(model.parameters()).device
    encoded = encode(tokenizer, texts, max_length)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    done = 0
    t0 = 0.0
    for step in range(steps + 1):  # step 0 warms up (allocations, kernels) and is not timed
        if step == 1:
            t0 = time.perf_counter()
        rows = [(step * batch + k) % len(texts) for k in range(batch)]
        with autocast(dtype, device):
            logits = model(**collate(tokenizer, [encoded[i] for i in rows], device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([labels[i] for i in rows], device=device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        done += batch if step else 0
    return done / (time.perf_counter() - t0)


def measure(dataset: str = "agnews", texts_n: int = 512, train_steps: int = 20, batch: int = 16, max_length: int = 64,
            frozen_pool: int = 2000, data_root: Path | None = None, answers_dir: Path | None = None, threads: int | None = None,
            fit_steps: int = 30) -> dict[str, Any]:
    from llkd_bench.datasets import load_dataset
    from llkd.student.model import load_student, predict_probs

    if threads:
        torch.set_num_threads(threads)
    data = load_dataset(dataset, data_root, pool_size=max(frozen_pool, texts_n), test_size=texts_n)
    texts, gold = data.test.texts[:texts_n], list(data.test.labels or [])[:texts_n]
    dtypes = ["float32", "bfloat16"]
    res: dict[str, Any] = {"cpu": cpu_summary(), "native_bf16": cpu_has_native_bf16(), "dataset": dataset, "texts": len(texts),
                           "batch": batch, "max_length": max_length, "torch": torch.__version__, "dtypes": {}}
    torch.manual_seed(0)
    model, tokenizer = load_student("minilm", data.schema)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    probs: dict[str, np.ndarray] = {}
    for dtype in dtypes:
        model.load_state_dict(init)  # every dtype trains from the same weights
        train_sps = _train_throughput(model, tokenizer, data.pool.texts, data.pool_gold, dtype, train_steps, batch, max_length)
        model.load_state_dict(init)
        predict_probs(model, tokenizer, texts[:64], max_length, dtype=dtype)  # warm-up
        t0 = time.perf_counter()
        probs[dtype] = predict_probs(model, tokenizer, texts, max_length, dtype=dtype)
        infer_sps = len(texts) / (time.perf_counter() - t0)
        res["dtypes"][dtype] = {"train_samples_per_s": train_sps, "inference_samples_per_s": infer_sps}
    # Agreement on a head that has learned something: fit the head in fp32 for a few steps first.
    model.load_state_dict(init)
    _train_throughput(model, tokenizer, data.pool.texts, data.pool_gold, "float32", fit_steps, batch, max_length)
    a = predict_probs(model, tokenizer, texts, max_length, dtype="float32")
    b = predict_probs(model, tokenizer, texts, max_length, dtype="bfloat16")
    res["agreement"] = {"same_label": float((a.argmax(1) == b.argmax(1)).mean()), "max_abs_prob_diff": float(np.abs(a - b).max()),
                        "fp32_accuracy": float((a.argmax(1) == np.asarray(gold)).mean()), "bf16_accuracy": float((b.argmax(1) == np.asarray(gold)).mean())}
    f, g = res["dtypes"]["float32"], res["dtypes"]["bfloat16"]
    res["ratio_bf16_over_fp32"] = {"train": g["train_samples_per_s"] / f["train_samples_per_s"], "inference": g["inference_samples_per_s"] / f["inference_samples_per_s"]}
    res["frozen"] = _frozen_run(data, frozen_pool, answers_dir)
    return res


def _frozen_run(data: Any, pool_n: int, answers_dir: Path | None) -> dict[str, Any]:
    """Wall time of a frozen-mode llkd training run (20 epochs) on the benchmark pool, with a
    cold embedding cache (encodes the pool) and then a warm one (what reruns pay)."""
    from llkd_bench.teacher import get_answers
    from llkd.config import LLKDConfig
    from llkd.data.loading import TextSet
    from llkd.evaluation.metering import StageMeter
    from llkd.student.embeddings import EmbeddingCache
    from llkd.student.trainer import StudentTrainer

    answers = get_answers(data, "smollm2-135m", answers_dir, "answers")
    pool = TextSet(data.pool.ids[:pool_n], data.pool.texts[:pool_n], None, data.pool.source)
    probs = answers.pool[:pool_n]
    out: dict[str, Any] = {"pool": len(pool), "teacher": "smollm2-135m (committed answers)"}
    with tempfile.TemporaryDirectory() as tmp:
        embeddings = Path(tmp) / "embeddings.sqlite"  # private and empty: the cold run is really cold
        for label in ("cold_cache_s", "warm_cache_s"):
            cfg = LLKDConfig.validated({"student": {"mode": "frozen", "output": str(Path(tmp) / label), "max_length": 64}, "selection": {"selector": "llkd"}})
            trainer = StudentTrainer(cfg.student, cfg.selection, data.schema, pool, probs, progress=False, embedding_cache=embeddings)
            with StageMeter("student") as meter:  # timed as llkd.pipeline.train_student times it
                result = trainer.train()
            out[label] = meter.seconds
            out["steps"] = result.steps
            out["data_usage"] = result.data_usage
        with EmbeddingCache(embeddings) as cache:
            out["cached_embeddings"] = int(cache.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
    return out


def markdown(res: dict[str, Any], command: str) -> str:
    f, g = res["dtypes"]["float32"], res["dtypes"]["bfloat16"]
    a, fr = res["agreement"], res["frozen"]
    lines = [
        f"Command: `{command}`; torch {res['torch']}; CPU: {res['cpu']}; native bf16: {res['native_bf16']}.",
        "",
        f"MiniLM student, {res['dataset']}, batch {res['batch']}, max_length {res['max_length']}, {res['texts']} inference texts:",
        "",
        "| compute dtype | fine-tune samples/s | inference samples/s |",
        "|---|---:|---:|",
        f"| float32 | {f['train_samples_per_s']:.1f} | {f['inference_samples_per_s']:.1f} |",
        f"| bfloat16 (autocast) | {g['train_samples_per_s']:.1f} | {g['inference_samples_per_s']:.1f} |",
        f"| ratio bf16 / fp32 | {res['ratio_bf16_over_fp32']['train']:.2f}x | {res['ratio_bf16_over_fp32']['inference']:.2f}x |",
        "",
        f"Prediction agreement of the same weights in fp32 and bf16: {a['same_label']:.1%} same label, max |prob diff| {a['max_abs_prob_diff']:.4f}; "
        f"accuracy fp32 {a['fp32_accuracy']:.3f}, bf16 {a['bf16_accuracy']:.3f}.",
        "",
        f"Frozen mode (`llkd train --student-mode frozen`, selector llkd, 20 epochs = {fr['steps']} steps) on a {fr['pool']}-text pool, {fr['teacher']}: "
        f"{fr['cold_cache_s']:.1f} s with an empty embedding cache (encodes the pool), {fr['warm_cache_s']:.1f} s with it cached "
        f"({fr['cached_embeddings']} embeddings); data used {fr['data_usage']:.1%}.",
    ]
    return "\n".join(lines)
