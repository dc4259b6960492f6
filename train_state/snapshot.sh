#!/usr/bin/env bash
# Copy the resumable state of running trainings (runs/<name>) into train_state/<name>.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "$@"; do
    mkdir -p "train_state/$name"
    cp "runs/$name/checkpoint.pt" "runs/$name/config.json" "runs/$name/log.csv" "train_state/$name/"
    # a finished run's summary; its weights ship only with a model card (the final checkpoint holds them)
    if [ -f "runs/$name/summary.json" ]; then cp "runs/$name/summary.json" "train_state/$name/"; fi
done
