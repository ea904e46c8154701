#!/usr/bin/env bash
# Teacher answers for the entity benchmark (issue 21), one data set after the other, in one
# process: NCBI-disease, then BC5CDR, then WNUT-17, each with benchmarks/ner/label_ncbi.sh's
# slicing (2,000 train sentences as the pool, the first 1,000 test sentences, 250 a slice) and
# teacher (qwen2.5-1.5b), and its own schema and few-shot template here (<name>.schema.yaml,
# <name>.template.yaml); a data set whose two files are missing when its turn comes is skipped.
# Resume: rerun it (finished slices are skipped, a killed one asks only for what is not cached).
#   nohup env OMP_NUM_THREADS=1 benchmarks/ner/label_all.sh > /tmp/runs/ner_label.log 2>&1 &
cd "$(dirname "$0")/../.."
here=benchmarks/ner
status=0
while read -r name folder train test; do
    if [ ! -f "$here/$name.schema.yaml" ] || [ ! -f "$here/$name.template.yaml" ]; then
        echo "== $(date '+%F %T') $name: no $here/$name.schema.yaml and $name.template.yaml, skipped"; continue
    fi
    echo "== $(date '+%F %T') data set $name"
    NER_NAME=$name NER_DATA=../shared/data/ner/$folder NER_TRAIN=$train NER_TEST=$test "$here/label_ncbi.sh" "$@" < /dev/null || status=1
done <<'LIST'
ncbi_disease NCBI-disease train.tsv test.tsv
bc5cdr BC5CDR train.tsv test.tsv
wnut17 wnut17 train.conll test.conll
LIST
echo "== $(date '+%F %T') all done (status $status)"
exit $status
