"""How fast the local teacher labels texts, and how much of the machine it uses.

Three ways to get a label from the same causal LM on the same texts:

(a) naive:     per text, apply the chat template to the full prompt, ``model.generate`` a few
               tokens greedily and parse the answer into a label (what most scripts do);
(b) reference: per text, score every label's verbalizer from scratch
               (:meth:`HFTeacher.label_log_probs_without_reuse`: no KV reuse, no batching);
(c) llkd:      :meth:`HFTeacher.score`: shared-prefix KV reuse, length-sorted batches, LM head
               only where a next token is scored.

(b) and (c) compute the same numbers, so their predictions must agree; (a) answers a slightly
different question (free generation) and can fail to name a label at all.

Work is estimated as FLOPs ~= 2 x non-embedding parameters x tokens run through the
transformer body (attention scores and the vocabulary projection left out), and compared with
the matrix-multiply peak of the teacher's dtype measured on the same machine in the same run
(fp32 and bf16 peaks are both measured: bf16 is fast only with native support, AVX512-BF16 or
AMX, so the CPU flags are reported next to every speed).

:func:`compare_dtypes` runs (c) with the same model loaded in several dtypes on the same texts,
interleaved over rounds so drifting machine load hits every dtype alike, and reports each
dtype's throughput, the ratio to the first dtype and how far the answers moved (agreement of
predicted labels, max |prob diff|).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from llkd.hardware import DTYPES, cpu_flags, cpu_summary
from llkd.teacher.base import TeacherAnswer
from llkd.teacher.hf import HFTeacher
from llkd.teacher.prompt import label_from_reply

PEAK_DTYPES = ("float32", "bfloat16")


def _aligned(rows: list[list[str]]) -> list[str]:
    """A plain-text table: first column left-aligned, the rest right-aligned, a rule under
    the header row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


# -- the machine ------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(size: int = 2048, reps: int = 5, device: torch.device | str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """``torch.matmul`` throughput of a ``size x size`` product in ``dtype`` with torch's current
    thread count: best and median GFLOP/s over ``reps`` timed products (after one warm-up)."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=DTYPES[dtype])
    flop = 2.0 * size**3
    torch.matmul(a, b)
    _sync(device)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        rates.append(flop / (time.perf_counter() - t0) / 1e9)
    return {"size": size, "reps": reps, "threads": torch.get_num_threads(), "device": str(device), "dtype": dtype,
            "best_gflops": max(rates), "median_gflops": statistics.median(rates)}


def matmul_peaks(dtypes: Sequence[str], size: int, reps: int, device: torch.device | str) -> dict[str, dict[str, Any]]:
    """:func:`matmul_peak_gflops` for each dtype."""
    return {d: matmul_peak_gflops(size, reps, device, d) for d in dtypes}


def _merge_peaks(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dtype: the better of the measurements before and after the timed work (the machine
    may be busier at one of them), with both kept."""
    return {d: {"gflops": max(before[d]["best_gflops"], after[d]["best_gflops"]), "before": before[d], "after": after[d]} for d in before}


def model_size(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts: total, embeddings (input, and the output projection when untied),
    the rest (``non_embedding``), and the vocabulary projection's size (``head``)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen[p.data_ptr()] = p.numel()
    total = sum(seen.values())
    emb_ptrs = {model.get_input_embeddings().weight.data_ptr()}
    head = model.get_output_embeddings()
    if head is not None:
        emb_ptrs.add(head.weight.data_ptr())
    embedding = sum(seen.get(ptr, 0) for ptr in emb_ptrs)
    head_params = head.weight.numel() if head is not None else 0
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding, "head": head_params}


# -- the three methods ------------------------------------------------------------------


@dataclass
class MethodRun:
    """What one method did: time, work and answers (pred -1: no label could be parsed)."""

    name: str
    seconds: float = 0.0
    tokens: int = 0  # positions run through the transformer body (padding included)
    real_tokens: int = 0  # the same without padding
    head_positions: int = 0  # positions where the vocabulary projection ran
    preds: list[int] = field(default_factory=list)
    scores: list[list[float]] | None = None  # summed label log-probs, (b) and (c)
    answers: list[str] | None = None  # generated text, (a)


def naive_prompt_ids(teacher: HFTeacher, text: str) -> list[int]:
    """The full prompt for one text, built the way a plain script would: render the user
    message, apply the model's chat template to it, tokenize the whole string."""
    tok = teacher.tokenizer
    user = teacher.template.render_user(teacher.schema, text)
    if teacher.template.kind == "chat":
        messages = [{"role": "user", "content": user}]
        if teacher.template.system:
            messages.insert(0, {"role": "system", "content": teacher.template.system})
        full = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        full = (tok.bos_token or "") + user
    return tok(full, add_special_tokens=False)["input_ids"]


def default_max_new_tokens(teacher: HFTeacher) -> int:
    return max(len(v) for v in teacher.verbalizer_ids) + 2


@torch.inference_mode()
def run_naive(teacher: HFTeacher, texts: Sequence[str], progress: bool = False, max_new_tokens: int | None = None) -> MethodRun:
    """(a): one ``generate`` per text, greedy, a few new tokens (default: the longest verbalizer's
    token count + 2), answer parsed into a label."""
    model, tok, dev = teacher.model, teacher.tokenizer, teacher.device
    max_new = max_new_tokens or default_max_new_tokens(teacher)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    run = MethodRun("naive", answers=[])
    _sync(dev)
    t0 = time.perf_counter()
    for text in tqdm(texts, desc="(a) naive generate", unit="text", disable=not progress, dynamic_ncols=True):
        ids = torch.tensor([naive_prompt_ids(teacher, text)], device=dev)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False, pad_token_id=pad)
        new = out[0, ids.shape[1]:]
        answer = tok.decode(new, skip_special_tokens=True)
        run.answers.append(answer)  # type: ignore[union-attr]
        label = label_from_reply(teacher.schema, answer)
        run.preds.append(-1 if label is None else label)
        # prefill runs the prompt; each further step runs the previous new token; the vocabulary
        # projection runs once per step (generate keeps only the last position's logits)
        n_new = int(new.shape[0])
        run.tokens += ids.shape[1] + max(n_new - 1, 0)
        run.head_positions += n_new
    _sync(dev)
    run.seconds = time.perf_counter() - t0
    run.real_tokens = run.tokens
    return run


def run_reference(teacher: HFTeacher, texts: Sequence[str], progress: bool = False) -> MethodRun:
    """(b): :meth:`HFTeacher.label_log_probs_without_reuse`, one text and one label at a time."""
    run = MethodRun("reference", scores=[])
    p = len(teacher.prefix_ids)
    _sync(teacher.device)
    t0 = time.perf_counter()
    for text in tqdm(texts, desc="(b) no reuse", unit="text", disable=not progress, dynamic_ncols=True):
        ids = teacher.text_token_ids(text)
        s = teacher.label_log_probs_without_reuse(ids).tolist()
        run.scores.append(s)  # type: ignore[union-attr]
        run.preds.append(int(np.argmax(s)))
        n = sum(p + len(ids) + len(v) for v in teacher.verbalizer_ids)
        run.tokens += n
        run.head_positions += n  # the full model computes logits at every position
    _sync(teacher.device)
    run.seconds = time.perf_counter() - t0
    run.real_tokens = run.tokens
    return run


def fast_batches(teacher: HFTeacher, texts: Sequence[str], batch_size: int) -> list[list[list[int]]]:
    """The token batches :meth:`HFTeacher.score` runs (sorted by length, ``batch_size`` each)."""
    encoded = [teacher.text_token_ids(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    return [[encoded[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def fast_work(teacher: HFTeacher, texts: Sequence[str], batch_size: int) -> tuple[int, int, int]:
    """(body positions incl. padding, real tokens, LM-head positions) of one ``score`` call
    from a cold prefix cache: the prefix once, each batch padded to its longest text, and for
    multi-token verbalizers the continuation of every text with each of them."""
    p = len(teacher.prefix_ids)
    multi = [v for v in teacher.verbalizer_ids if len(v) > 1]
    k = max((len(v) for v in multi), default=1) - 1
    tokens, real, head = p, p, 0
    for batch in fast_batches(teacher, texts, batch_size):
        b, width = len(batch), max(len(x) for x in batch)
        tokens += b * width
        real += sum(len(x) for x in batch)
        head += b
        if multi:
            tokens += b * len(multi) * k
            real += b * sum(len(v) - 1 for v in multi)
            head += b * len(multi) * k
    return tokens, real, head


def timed_score(teacher: HFTeacher, texts: Sequence[str], batch_size: int) -> tuple[float, np.ndarray]:
    """(seconds, probs [N, C]; NaN rows for failures) of one :meth:`HFTeacher.score` call on
    all texts, the shared prefix computed inside the timed call (its cached KV dropped first)."""
    old_batch = teacher.batch_size
    teacher.batch_size = batch_size
    teacher.reset_prefix_cache()
    try:
        _sync(teacher.device)
        t0 = time.perf_counter()
        answers = teacher.score(list(texts))
        _sync(teacher.device)
        seconds = time.perf_counter() - t0
    finally:
        teacher.batch_size = old_batch
    probs = np.full((len(texts), teacher.schema.num_labels), np.nan)
    for i, a in enumerate(answers):
        if isinstance(a, TeacherAnswer):
            probs[i] = a.probs
    return seconds, probs


def _preds(probs: np.ndarray) -> list[int]:
    return [int(np.argmax(p)) if not np.isnan(p).any() else -1 for p in probs]


def run_fast(teacher: HFTeacher, texts: Sequence[str], batch_size: int) -> MethodRun:
    """(c): :meth:`HFTeacher.score` on all texts at once (:func:`timed_score`)."""
    run = MethodRun("llkd")
    run.seconds, probs = timed_score(teacher, texts, batch_size)
    run.preds = _preds(probs)
    run.tokens, run.real_tokens, run.head_positions = fast_work(teacher, texts, batch_size)
    # Summed label log-probs from the same batched path (untimed), to compare with (b).
    scores: list[list[float] | None] = [None] * len(texts)
    encoded = [teacher.text_token_ids(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out = teacher.label_log_probs([encoded[i] for i in idx])
        for row, i in enumerate(idx):
            scores[i] = out[row].tolist()
    run.scores = scores  # type: ignore[assignment]
    return run


# -- the benchmark ----------------------------------------------------------------------

METHOD_TITLES = {
    "naive": "(a) naive: chat template + generate + parse",
    "reference": "(b) per-label scoring, no reuse",
    "llkd": "(c) llkd score (prefix KV reuse, batched)",
}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    m = rows.max(axis=1, keepdims=True)
    return rows - m - np.log(np.exp(rows - m).sum(axis=1, keepdims=True))


def bench_teacher(
    teacher: HFTeacher,
    texts: Sequence[str],
    gold: Sequence[int] | None = None,
    batch_size: int = 16,
    naive: bool = True,
    reference: bool = True,
    peak_size: int = 2048,
    peak_reps: int = 5,
    naive_max_new_tokens: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the methods on the same texts with the same threads; return every number."""
    texts = list(texts)
    size = model_size(teacher.model)
    hidden = int(getattr(teacher.model.config, "hidden_size", 0) or 0)
    load_before = _loadavg()
    log(f"measuring fp32 and bf16 matmul peaks ({peak_size}x{peak_size}, {peak_reps} reps)")
    peaks_before = matmul_peaks(PEAK_DTYPES, peak_size, peak_reps, teacher.device)

    # Warm up once, untimed (first-call allocation, kernel selection): generate's prefill is a
    # full forward like (b)'s, so one of the two suffices; (c) runs its own batched path.
    warm = texts[:1]
    if naive:
        run_naive(teacher, warm, max_new_tokens=naive_max_new_tokens)
    elif reference:
        run_reference(teacher, warm)
    run_fast(teacher, warm, batch_size)

    runs: dict[str, MethodRun] = {}
    if naive:
        log(f"(a) naive generate loop on {len(texts)} texts")
        runs["naive"] = run_naive(teacher, texts, progress, naive_max_new_tokens)
    if reference:
        log(f"(b) per-label scoring without reuse on {len(texts)} texts")
        runs["reference"] = run_reference(teacher, texts, progress)
    log(f"(c) llkd score on {len(texts)} texts, batch size {batch_size}")
    runs["llkd"] = run_fast(teacher, texts, batch_size)
    peaks = _merge_peaks(peaks_before, matmul_peaks(PEAK_DTYPES, peak_size, peak_reps, teacher.device))
    peak_dtype = teacher.dtype if teacher.dtype in peaks else "float32"  # work is compared with its own dtype's peak
    peak = peaks[peak_dtype]["gflops"]

    methods: dict[str, Any] = {}
    for key, r in runs.items():
        body_gflop = 2.0 * size["non_embedding"] * r.tokens / 1e9
        head_gflop = 2.0 * size["head"] * r.head_positions / 1e9
        m: dict[str, Any] = {
            "title": METHOD_TITLES[key],
            "texts": len(texts),
            "seconds": r.seconds,
            "texts_per_s": len(texts) / r.seconds if r.seconds > 0 else float("inf"),
            "tokens": r.tokens,
            "real_tokens": r.real_tokens,
            "tokens_per_text": r.tokens / len(texts),
            "head_positions": r.head_positions,
            "gflop": body_gflop,
            "gflops": body_gflop / r.seconds,
            "fraction_of_peak": body_gflop / r.seconds / peak,
            "gflop_with_head": body_gflop + head_gflop,
            "gflops_with_head": (body_gflop + head_gflop) / r.seconds,
            "fraction_of_peak_with_head": (body_gflop + head_gflop) / r.seconds / peak,
            "unparsed": sum(1 for p in r.preds if p < 0),
        }
        if gold is not None:
            m["accuracy"] = float(np.mean([p == g for p, g in zip(r.preds, gold)]))
        if r.answers is not None:
            m["answers"] = r.answers
        methods[key] = m

    fast = runs["llkd"]
    speedup = {f"llkd_over_{k}": methods["llkd"]["texts_per_s"] / methods[k]["texts_per_s"] for k in runs if k != "llkd"}
    agreement: dict[str, Any] = {}
    if "reference" in runs:
        ref = runs["reference"]
        a = np.asarray(ref.scores, dtype=np.float64)
        b = np.asarray(fast.scores, dtype=np.float64)
        agreement["reference_vs_llkd"] = {
            "disagreements": int(sum(x != y for x, y in zip(ref.preds, fast.preds))),
            "identical": ref.preds == fast.preds,
            "max_abs_logprob_diff": float(np.abs(a - b).max()),
            "max_abs_normalized_logprob_diff": float(np.abs(_log_softmax(a) - _log_softmax(b)).max()),
        }
    if "naive" in runs:
        agreement["naive_vs_llkd"] = {
            "disagreements": int(sum(x != y for x, y in zip(runs["naive"].preds, fast.preds))),
            "unparsed": methods["naive"]["unparsed"],
        }
    return {
        "model": teacher.model_name,
        "dtype": teacher.dtype,
        "device": str(teacher.device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "texts": len(texts),
        "batch_size": batch_size,
        "naive_max_new_tokens": naive_max_new_tokens or default_max_new_tokens(teacher),
        "prefix_tokens": len(teacher.prefix_ids),
        "verbalizer_tokens": [len(v) for v in teacher.verbalizer_ids],
        "params": size,
        "hidden_size": hidden,
        "cpu": cpu_summary(),
        "cpu_flags": sorted(cpu_flags()),
        "peak": peaks[peak_dtype] | {"dtype": peak_dtype},
        "peaks": peaks,
        "loadavg": {"before": load_before, "after": _loadavg()},  # other work on the machine
        "methods": methods,
        "speedup": speedup,
        "agreement": agreement,
        "preds": {k: r.preds for k, r in runs.items()},
    }


def _peak_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    for dtype, pk in res["peaks"].items():
        lines.append(f"{dtype} matmul peak ({pk['before']['size']}x{pk['before']['size']}, best of {pk['before']['reps']}): "
                     f"{pk['before']['best_gflops']:.1f} GFLOP/s before, {pk['after']['best_gflops']:.1f} after -> peak {pk['gflops']:.1f} GFLOP/s")
    return lines


def format_report(res: dict[str, Any]) -> str:
    """The human-readable table of a :func:`bench_teacher` result."""
    lines = [
        f"teacher {res['model']} ({res['dtype']}, {res['device']}, {res['threads']} threads, torch {res['torch']}); "
        f"{res['texts']} texts; {res['params']['non_embedding'] / 1e6:.1f}M non-embedding params; "
        f"prompt prefix {res['prefix_tokens']} tokens",
        f"cpu: {res['cpu']}",
        *_peak_lines(res),
        f"% peak is against the {res['peak']['dtype']} peak (the teacher's dtype)",
    ]
    la = res.get("loadavg") or {}
    if la.get("before") and la.get("after"):
        lines.append(f"load average (1/5/15 min) {'/'.join(map(str, la['before']))} before, "
                     f"{'/'.join(map(str, la['after']))} after ({res.get('cpu_count') or os.cpu_count()} CPUs)")
    lines += [
        "",
    ]
    has_acc = any("accuracy" in m for m in res["methods"].values())
    header = ["method", "texts/s", "s total", "tokens/text", "GFLOP/s", "% peak", "% peak +head"] + (["accuracy"] if has_acc else [])
    rows = [header]
    for key, m in res["methods"].items():
        title = m["title"] + (f" b={res['batch_size']}" if key == "llkd" else "")
        row = [title, f"{m['texts_per_s']:.2f}", f"{m['seconds']:.1f}", f"{m['tokens_per_text']:.1f}",
               f"{m['gflops']:.1f}", f"{100 * m['fraction_of_peak']:.1f}%", f"{100 * m['fraction_of_peak_with_head']:.1f}%"]
        if has_acc:
            row.append(f"{m['accuracy']:.4f}" if "accuracy" in m else "-")
        rows.append(row)
    lines += _aligned(rows)
    lines.append("")
    for key, ratio in res["speedup"].items():
        other = key.split("_over_")[1]
        tag = {"naive": "(c)/(a)", "reference": "(c)/(b)"}[other]
        lines.append(f"speed-up {tag}: {ratio:.1f}x")
    ag = res["agreement"]
    if "reference_vs_llkd" in ag:
        r = ag["reference_vs_llkd"]
        lines.append(
            f"(b) vs (c) predictions identical: {'yes' if r['identical'] else 'NO'} "
            f"({r['disagreements']} of {res['texts']} differ); max |diff| of summed label log-probs "
            f"{r['max_abs_logprob_diff']:.2e} (normalised {r['max_abs_normalized_logprob_diff']:.2e})"
        )
    if "naive_vs_llkd" in ag:
        r = ag["naive_vs_llkd"]
        lines.append(f"(a) vs (c): {r['disagreements']} of {res['texts']} predictions differ; "
                     f"(a) named no label on {r['unparsed']} texts (counted as misses); "
                     f"(a) generates up to {res['naive_max_new_tokens']} tokens")
    lines.append("GFLOP/s = 2 x non-embedding params x tokens run through the model body / time "
                 "(padding counted; '+head' adds the vocabulary projection where it runs)")
    return "\n".join(lines)


# -- one model, several dtypes ----------------------------------------------------------


def compare_dtypes(
    teachers: dict[str, HFTeacher],
    texts: Sequence[str],
    gold: Sequence[int] | None = None,
    batch_size: int = 16,
    rounds: int = 2,
    peak_size: int = 2048,
    peak_reps: int = 5,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """(c) with the same model in each dtype (``teachers``: dtype -> teacher, the first is the
    reference) on the same texts. Rounds alternate the dtype order (ABBA...), each dtype's
    best round counts; answers are compared with the reference dtype's."""
    texts = list(texts)
    dtypes = list(teachers)
    first = teachers[dtypes[0]]
    device = first.device
    size = model_size(first.model)
    load_before = _loadavg()
    peak_dtypes = list(dict.fromkeys([*PEAK_DTYPES, *dtypes]))
    log(f"measuring matmul peaks ({', '.join(peak_dtypes)}; {peak_size}x{peak_size}, {peak_reps} reps)")
    peaks_before = matmul_peaks(peak_dtypes, peak_size, peak_reps, device)
    for d in dtypes:  # warm-up, untimed: first-call allocation and kernel selection per dtype
        timed_score(teachers[d], texts[:batch_size], batch_size)
    seconds: dict[str, list[float]] = {d: [] for d in dtypes}
    probs: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for d in (dtypes if r % 2 == 0 else dtypes[::-1]):
            log(f"round {r + 1}/{rounds}: {d} on {len(texts)} texts, batch size {batch_size}")
            secs, p = timed_score(teachers[d], texts, batch_size)
            seconds[d].append(secs)
            probs[d] = p  # the same numbers every round (no sampling)
    peaks = _merge_peaks(peaks_before, matmul_peaks(peak_dtypes, peak_size, peak_reps, device))
    tokens, real, head = fast_work(first, texts, batch_size)
    body_gflop = 2.0 * size["non_embedding"] * tokens / 1e9
    per_dtype: dict[str, Any] = {}
    for d in dtypes:
        best = min(seconds[d])
        preds = _preds(probs[d])
        m: dict[str, Any] = {
            "seconds": best,
            "seconds_per_round": seconds[d],
            "texts_per_s": len(texts) / best,
            "gflops": body_gflop / best,
            "fraction_of_peak": body_gflop / best / peaks[d]["gflops"],
            "failed": int(np.isnan(probs[d]).any(axis=1).sum()),
        }
        if gold is not None:
            m["accuracy"] = float(np.mean([p == g for p, g in zip(preds, gold)]))
        per_dtype[d] = m
    ref = dtypes[0]
    comparison: dict[str, Any] = {}
    for d in dtypes[1:]:
        a, b = probs[ref], probs[d]
        both = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
        same = [x == y for x, y in zip(_preds(a[both]), _preds(b[both]))]
        diff = np.abs(a[both] - b[both])
        comparison[f"{d}_vs_{ref}"] = {
            "throughput_ratio": per_dtype[d]["texts_per_s"] / per_dtype[ref]["texts_per_s"],
            "compared": int(both.sum()),
            "agree": int(sum(same)),
            "agreement": float(np.mean(same)) if same else float("nan"),
            "max_abs_prob_diff": float(diff.max()) if diff.size else float("nan"),
            "mean_abs_prob_diff": float(diff.mean()) if diff.size else float("nan"),
        }
    return {
        "mode": "dtypes",
        "model": first.model_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_summary(),
        "cpu_flags": sorted(cpu_flags()),
        "torch": torch.__version__,
        "texts": len(texts),
        "batch_size": batch_size,
        "rounds": rounds,
        "tokens_per_text": tokens / len(texts),
        "params": size,
        "peaks": peaks,
        "loadavg": {"before": load_before, "after": _loadavg()},
        "dtypes": per_dtype,
        "comparison": comparison,
        "preds": {d: _preds(probs[d]) for d in dtypes},
    }


def format_dtype_report(res: dict[str, Any]) -> str:
    """The human-readable table of a :func:`compare_dtypes` result."""
    lines = [
        f"teacher {res['model']} ({res['device']}, {res['threads']} threads, torch {res['torch']}); {res['texts']} texts; "
        f"llkd scoring (c), batch size {res['batch_size']}, best of {res['rounds']} interleaved rounds per dtype",
        f"cpu: {res['cpu']}",
        *_peak_lines(res),
    ]
    la = res.get("loadavg") or {}
    if la.get("before") and la.get("after"):
        lines.append(f"load average (1/5/15 min) {'/'.join(map(str, la['before']))} before, "
                     f"{'/'.join(map(str, la['after']))} after ({res.get('cpu_count') or os.cpu_count()} CPUs)")
    lines.append("")
    has_acc = any("accuracy" in m for m in res["dtypes"].values())
    header = ["dtype", "texts/s", "s (best)", "s per round", "GFLOP/s", "% own peak"] + (["accuracy"] if has_acc else [])
    rows = [header]
    for d, m in res["dtypes"].items():
        row = [d, f"{m['texts_per_s']:.2f}", f"{m['seconds']:.1f}", " / ".join(f"{x:.1f}" for x in m["seconds_per_round"]),
               f"{m['gflops']:.1f}", f"{100 * m['fraction_of_peak']:.1f}%"]
        if has_acc:
            row.append(f"{m['accuracy']:.4f}" if "accuracy" in m else "-")
        rows.append(row)
    lines += _aligned(rows)
    lines.append("")
    for key, c in res["comparison"].items():
        d, ref = key.split("_vs_")
        lines.append(f"{d}/{ref} throughput: {c['throughput_ratio']:.2f}x")
        lines.append(f"{d} vs {ref}: predicted labels agree on {c['agree']} of {c['compared']} texts ({100 * c['agreement']:.1f}%); "
                     f"max |prob diff| {c['max_abs_prob_diff']:.4f}, mean {c['mean_abs_prob_diff']:.5f}")
    lines.append("GFLOP/s = 2 x non-embedding params x tokens run through the model body / time; % own peak: against the matmul peak of that dtype")
    return "\n".join(lines)
