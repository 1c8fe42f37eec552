#!/usr/bin/env bash
# Evaluate the demo's router (and a differently-seeded run's, and the mean ensemble of their mini-vl
# models) end to end: RM-Bench on ../shared/data/rm-bench, HH-RLHF validation, the held-out visual
# split; then a report. The router sends text pairs to the text RM and image pairs to mini-vl.
# Usage: bash benchmarks/evaluate_demo.sh [runs/demo] [runs/demo-seed7]
set -euo pipefail
A=${1:-runs/demo}
B=${2:-runs/demo-seed7}
BIN=${BIN:-.venv/bin}
OUT=runs/eval
mkdir -p "$OUT"
[ -d "$B/model" ] || "$BIN/basereward" demo --out "$B" train.seed=7
"$BIN/basereward" ensemble --members "$A/model" "$B/model" --method mean --output runs/ensemble-mean
for name in demo:$A/router seed7:$B/router; do
  tag=${name%%:*}; model=${name#*:}
  "$BIN/basereward" eval --model "$model" --bench pairs --data "$A/data/hh-rlhf/hh_val.jsonl" --output "$OUT/$tag-hh-val.json"
done
for name in demo:$A/model seed7:$B/model ensemble:runs/ensemble-mean; do
  tag=${name%%:*}; model=${name#*:}
  "$BIN/basereward" eval --model "$model" --bench pairs --data "$A/data/synth-heldout/pairs.jsonl" --output "$OUT/$tag-visual-heldout.json"
done
"$BIN/basereward" eval --model "$A/router" --bench rm-bench --data ../shared/data/rm-bench --output "$OUT/demo-rm-bench.json" --batch-size 32
"$BIN/basereward" report "$OUT"/*.json --out runs/report --pairs "$A/data/hh-rlhf/hh_val.jsonl" "$A/data/synth-heldout/pairs.jsonl" \
  --title "basereward demo models"
