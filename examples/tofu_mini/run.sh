#!/usr/bin/env bash
# TOFU-mini unlearning with the perta-hub commands, step by step: the pipeline `perta-hub demo --quick` runs
# (the recipe perta_hub/resources/recipes/quick.yaml, = examples/recipes/quick.yaml), written out as the commands a
# user types. Offline, ~3 minutes on 2 cores.
#
#   bash examples/tofu_mini/run.sh [OUT]
set -euo pipefail
OUT=${1:-tofu_mini_out}
mkdir -p "$OUT"

# 1. Data (bundled TOFU) and the initial model: the recipe's data entries (2 retain authors + 40 real-author and
#    world-fact questions, the "general knowledge", and the forget01 authors) written to $OUT/data/, and its
#    `init` step: a tokenizer trained on the TOFU text + a randomly initialised small Llama in $OUT/init.
perta-hub run quick -o "$OUT" --only init

# 2. Memorise: the target (retain + forget authors) and the retain model (retain authors only).
train="--epochs 40 --lr 3e-3 --batch-size 16 --grad-accum 1 --warmup 1 --weight-decay 0 --device cpu"
perta-hub finetune "$OUT/init" --data "$OUT/data/target-data.json" -o "$OUT/target" $train
perta-hub finetune "$OUT/init" --data "$OUT/data/retain-data.json" -o "$OUT/retain" $train

# 3. The task vector: fine-tune the target on the forget authors, tau = theta_ft - theta_target.
perta-hub task-vector "$OUT/target" --forget tofu:forget01 -o "$OUT/tv" \
    --epochs 5 --lr 1e-3 --batch-size 16 --grad-accum 1 --warmup 0 --weight-decay 0 --device cpu

# 4. Weight maps: gradient and diagonal-Fisher importance on the forget and retain authors.
for method in grad fisher; do
    perta-hub compute-weights "$OUT/target" --forget tofu:forget01 \
        --retain "$OUT/data/retain-authors.json" --method "$method" -o "$OUT/wm-$method" --device cpu
done

# 5. Unlearn: plain task-vector negation and PerTA, three alphas each in one pass.
alphas="--alpha 1 --alpha 2 --alpha 4"
perta-hub apply "$OUT/target" --task-vector "$OUT/tv" $alphas -o "$OUT/unlearned/tv"
perta-hub apply "$OUT/target" --task-vector "$OUT/tv" --weights "$OUT/wm-grad" $alphas -o "$OUT/unlearned/perta-grad"
perta-hub apply "$OUT/target" --task-vector "$OUT/tv" --weights "$OUT/wm-fisher" $alphas -o "$OUT/unlearned/perta-fisher"

# 6. Evaluate everything on TOFU forget01 (first 40 rows of each split), against the retain model.
perta-hub evaluate "$OUT/target" "$OUT"/unlearned/*/alpha-* --benchmark tofu --forget-split forget01 \
    --retain-model "$OUT/retain" --data-dir "$(python -c 'from perta_hub.data import BUNDLED_TOFU; print(BUNDLED_TOFU)')" \
    --max-examples 40 --device cpu -o "$OUT/eval/tofu.json" --plot "$OUT/eval/tofu.png"
