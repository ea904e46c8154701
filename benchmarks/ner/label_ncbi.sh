#!/usr/bin/env bash
# Teacher answers for the NCBI-disease entity benchmark (issue 21).
#
# What: the first 2,000 sentences of NCBI-disease train.tsv (the pool) and the first 1,000 of
# its test.tsv (all 940 it has), from ../shared/data/ner/NCBI-disease, labelled by
# `llkd label --data-task entities` with the packaged teacher qwen2.5-1.5b (Qwen2.5-Coder-1.5B-
# Instruct, hf backend, CPU, dtype auto = bfloat16 on a CPU with AVX512-BF16, greedy, at most
# 64 new tokens) and a few-shot chat prompt: benchmarks/ner/ncbi_disease.template.yaml (the
# built-in chat entity template plus four gold examples, train sentences 2006-2016, after
# the pool) with the schema benchmarks/ner/ncbi_disease.schema.yaml (Disease).
#
# How: in slices of 250 sentences (pool 0-7, then test 0-3). Each slice is written as its own
# input file $NER_WORK/ncbi_disease.<split>.<k>.jsonl (id = "<file>-<sentence number>", text,
# tokens, gold spans: llkd prints the teacher's F1 against them, it does not use them), labelled
# through one SQLite teacher cache ($NER_CACHE), exported to $NER_WORK/exported/, gzipped to
# benchmarks/ner/answers/ncbi_disease.<split>.<k>.jsonl.gz: one row per sentence, {id, text,
# spans: [{start, end, type, text, confidence}], outside_confidence, failure}.
#
# Resume: rerun it. A slice whose answer file exists is skipped; a killed slice asks only for
# the sentences without a cached answer (the cache commits every batch of 16). A slice where
# some sentence has no answer is not exported; the next run retries it.
#
#   benchmarks/ner/label_ncbi.sh            # everything (threads: OMP_NUM_THREADS, default 1)
#   benchmarks/ner/label_ncbi.sh check 8    # the first slice's first 8 sentences only, exported to
#                                           # $NER_WORK (the answers stay cached for the real run)
#   nohup env OMP_NUM_THREADS=1 benchmarks/ner/label_ncbi.sh > /tmp/runs/ner_label.log 2>&1 &
#
# Another CoNLL data set with the same slicing: NER_NAME=<name> (its benchmarks/ner/<name>.schema.yaml
# and <name>.template.yaml), NER_DATA=<folder>, NER_TRAIN / NER_TEST=<file names in it>;
# benchmarks/ner/label_all.sh runs NCBI-disease, then BC5CDR and WNUT-17 where their files exist.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-${OMP_NUM_THREADS:-1}}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LLKD="${LLKD:-.venv/bin/llkd}"
PY="${PY:-.venv/bin/python}"
NAME="${NER_NAME:-ncbi_disease}"
DATA="${NER_DATA:-../shared/data/ner/NCBI-disease}"
TRAIN="${NER_TRAIN:-train.tsv}" TESTFILE="${NER_TEST:-test.tsv}"
WORK="${NER_WORK:-/tmp/ner}"
CACHE="${NER_CACHE:-${LLKD_CACHE_DIR:-$HOME/.cache/llkd}/ner-teacher.sqlite}"
OUT=benchmarks/ner/answers
SLICE=250 POOL=2000 TEST=1000
TEACHER=(--data-task entities --data-labels benchmarks/ner/$NAME.schema.yaml --teacher-model qwen2.5-1.5b
         --teacher-template benchmarks/ner/$NAME.template.yaml --teacher-device cpu --teacher-dtype auto
         --teacher-batch-size 16 --teacher-cache "$CACHE" --no-progress)
CHECK=0
if [ "${1:-}" = check ]; then CHECK="${2:-8}"; fi
mkdir -p "$WORK/exported" "$OUT" "$(dirname "$CACHE")"

# The slice input files: sentences [k*SLICE, (k+1)*SLICE) of the first POOL (TEST) of each file.
"$PY" - "$DATA" "$WORK" "$NAME" "$SLICE" "$POOL" "$TEST" "$CHECK" "$TRAIN" "$TESTFILE" <<'EOF'
import json, sys
from pathlib import Path
from llkd.data.entities import load_entities

data, work, name, size, pool, test, check, train_file, test_file = sys.argv[1:]
size, check = int(size), int(check)
for split, file, n in (("pool", train_file, int(pool)), ("test", test_file, int(test))):
    d = load_entities(Path(data) / file, limit=n)
    for k, start in enumerate(range(0, len(d), size)):
        rows = range(start, min(start + (check or size), len(d)))
        out = Path(work) / (f"{name}.check.jsonl" if check else f"{name}.{split}.{k}.jsonl")
        with open(out, "w", encoding="utf-8") as f:
            for i in rows:
                spans = [{"start": s.start, "end": s.end, "type": s.type} for s in d.spans[i]]
                f.write(json.dumps({"id": f"{Path(file).stem}-{i}", "text": d.texts[i], "tokens": d.tokens[i], "spans": spans}) + "\n")
        if check:
            sys.exit(0)
EOF

label() {  # label INPUT EXPORT: one llkd label call, timed
    local t0=$SECONDS
    echo "== $(date '+%F %T') $1 ($(wc -l < "$1") sentences)"
    if "$LLKD" label "${TEACHER[@]}" --data-pool "$1" --export "$2"; then
        echo "== $(date '+%F %T') done in $((SECONDS - t0))s"
    else
        echo "== $(date '+%F %T') $1: llkd label failed or left sentences without an answer (rc $?); rerun to retry"
        return 1
    fi
}

if [ "$CHECK" -gt 0 ]; then
    label "$WORK/$NAME.check.jsonl" "$WORK/$NAME.check.answers.jsonl"
    exit
fi

failed=0
for input in $(ls "$WORK"/$NAME.pool.*.jsonl | sort -V) $(ls "$WORK"/$NAME.test.*.jsonl | sort -V); do
    base=$(basename "$input" .jsonl)  # ncbi_disease.<split>.<k>
    final="$OUT/$base.jsonl.gz"
    if [ -s "$final" ]; then echo "== $base: $final exists, skipped"; continue; fi
    if label "$input" "$WORK/exported/$base.jsonl"; then
        gzip -n -9 -c "$WORK/exported/$base.jsonl" > "$final.part" && mv "$final.part" "$final"
        echo "== wrote $final ($(stat -c %s "$final") bytes)"
    else
        failed=$((failed + 1))
    fi
done
echo "== $(date '+%F %T') finished; $failed slice(s) incomplete (rerun to retry)"
[ "$failed" -eq 0 ]
