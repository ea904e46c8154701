#!/usr/bin/env bash
# The imbalance study (docs/results.md, "Skewed priors"): frozen tier, strong teacher's committed
# answers, pool 2,000 with its last 500 texts as the dev split, natural pools and long-tailed
# resamplings, three calibration settings side by side. Resumable: rerun to continue.
# Env: SEEDS, TIER (frozen, finetune), OUT, CASES (dataset:ratio:head), CONFIGS, METHODS_OLD/MEAN/AUTO;
# further flags go to llkd bench (e.g. --epochs 1).
#   old     : calibration balanced, guard toward 1/C       (the defaults before 2026-12-01)
#   mean    : calibration mean, guard toward its class shares (the new default without a dev split)
#   autodev : calibration auto on the dev split, guard toward its prior (the new default with one)
set -euo pipefail
SEEDS=${SEEDS:-0,1,2}
TIER=${TIER:-frozen}
OUT=${OUT:-runs/imbalance-$TIER}
CASES=${CASES:-"csabstruct: agnews: mag: emotion: sst2: agnews:10:0 agnews:50:0 sst2:10:1 sst2:50:0 mag:10:0 mag:50:0"}
for case in $CASES; do
  IFS=: read -r d ratio head <<< "$case"
  tag=$d${ratio:+-ir$ratio-h$head}
  skew=${ratio:+--imbalance $ratio --imbalance-head $head}
  for cfg in ${CONFIGS:-old mean autodev}; do
    case $cfg in
      old) cal=balanced; methods=${METHODS_OLD:-teacher,all,soft,llkd} ;;
      mean) cal=mean; methods=${METHODS_MEAN:-teacher,all,soft,llkd} ;;
      autodev) cal=auto; methods=${METHODS_AUTO:-teacher,all,soft,llkd,llkd+guni} ;;
    esac
    llkd bench --tier "$TIER" --suites baselines --methods "$methods" --teacher qwen2.5-1.5b --teacher-source answers \
      --pool-size 2000 --test-size 1000 --dev-from-pool 500 --calibration $cal $skew --datasets "$d" --seeds "$SEEDS" \
      --threads 1 --no-progress --output "$OUT/$cfg/$tag" "$@"
  done
done
