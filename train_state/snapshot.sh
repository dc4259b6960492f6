#!/usr/bin/env bash
# Copy the resumable state of running trainings (runs/<name>) into train_state/<name>.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "$@"; do
    mkdir -p "train_state/$name"
    cp "runs/$name/checkpoint.pt" "runs/$name/config.json" "runs/$name/log.csv" "train_state/$name/"
    # a finished run also has its exported weights and summary (evaluated and shipped by the next session)
    for finished in weights.pt summary.json; do
        if [ -f "runs/$name/$finished" ]; then cp "runs/$name/$finished" "train_state/$name/"; fi
    done
done
