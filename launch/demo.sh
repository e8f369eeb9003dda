#!/usr/bin/env bash
# The whole demo on one machine (minutes on a 2-core CPU):
#   synthetic speech+gesture corpus -> ArrayRecord shards -> train the small model
#   -> generate from a held-out clip -> BVH + stick-figure MP4 with the audio
#   -> evaluate on the held-out clips against the baselines (metrics.json + PNG).
#
#   bash launch/demo.sh [OUT]          # OUT defaults to runs/demo; `make demo` runs this
#
# Layout of OUT: data_src/ (generated WAV+BVH), data/ (shards + manifest), run/ (training
# workdir: config, checkpoints, metrics), out/ (generated BVH + MP4), eval/ (metrics.json,
# metrics.png; the FGD autoencoder is trained once into data/fgd_ae).
# Re-running continues where it stopped: the corpus and shards are reused, training resumes
# from its last checkpoint (and does nothing when finished), generation is redone.
# Environment: PYTHON (default .venv/bin/python if present), DEMO_TRAIN_STEPS (default: the
# config's train.num_steps), DEMO_SAMPLER / DEMO_STEPS (default: the config's DPM-Solver++, 20
# steps), DEMO_EVAL=0 skips the evaluation, DEMO_EVAL_SAMPLER (default ddpm) scores another sampler.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
OUT="${1:-runs/demo}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CONFIG=configs/demo.py
SRC="$OUT/data_src"
DATA="$OUT/data"
RUN="$OUT/run"
GEN="$OUT/out"
mkdir -p "$OUT"
t0=$SECONDS
step() { echo; echo "== [$((SECONDS - t0)) s] $*"; }

step "1/5 synthetic corpus -> $SRC"
if ls "$SRC"/demo_test_*.wav >/dev/null 2>&1; then
  echo "corpus exists, reusing"
else
  "$PYTHON" -m data_prep.synthetic --config="$CONFIG" --config.data.root="$SRC"
fi

step "2/5 prepare shards -> $DATA"
"$PYTHON" -m data_prep.prepare --config="$CONFIG" --config.data.root="$SRC" --config.data.out="$DATA"

step "3/5 train -> $RUN"
TRAIN_ARGS=(--config="$CONFIG" --config.data.root="$SRC" --config.data.out="$DATA" --workdir="$RUN")
if [[ -n "${DEMO_TRAIN_STEPS:-}" ]]; then TRAIN_ARGS+=(--config.train.num_steps="$DEMO_TRAIN_STEPS"); fi
"$PYTHON" -m gesture_jax.train "${TRAIN_ARGS[@]}"

step "4/5 generate from a held-out clip -> $GEN"
CLIP="$(ls "$SRC"/demo_test_*.wav | head -n 1)"
GEN_ARGS=(--workdir="$RUN" --audio="$CLIP" --out="$GEN" --video)
if [[ -n "${DEMO_SAMPLER:-}" ]]; then GEN_ARGS+=(--sampler="$DEMO_SAMPLER"); fi
if [[ -n "${DEMO_STEPS:-}" ]]; then GEN_ARGS+=(--steps="$DEMO_STEPS"); fi
"$PYTHON" -m gesture_jax.generate "${GEN_ARGS[@]}"

if [[ "${DEMO_EVAL:-1}" != "0" ]]; then
  step "5/5 evaluate on the held-out clips -> $OUT/eval"
  if [[ ! -f "$DATA/fgd_ae/meta.json" ]]; then
    "$PYTHON" -m gesture_jax.evaluate --train_fgd_ae --config="$CONFIG" --config.data.root="$SRC" \
      --config.data.out="$DATA"
  fi
  # scored with the reference's sampler (ancestral DDPM over all 1000 steps, ~40 s here): the
  # model's own distribution, not a fast solver's approximation of it
  EVAL_ARGS=(--workdir="$RUN" --split=test --out="$OUT/eval" --fgd_ae="$DATA/fgd_ae"
             --sampler="${DEMO_EVAL_SAMPLER:-ddpm}")
  "$PYTHON" -m gesture_jax.evaluate "${EVAL_ARGS[@]}"
fi

echo
echo "== done in $((SECONDS - t0)) s"
ls -l "$GEN"
