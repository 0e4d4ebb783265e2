#!/usr/bin/env bash
# Train the 5 cross-validation folds of a QuantIF model with stock nnUNetv2_train.
#
# Usage: scripts/train_5fold.sh [options] DATASET TRAINER PLANS [GPUS]
#   DATASET  dataset id or name (e.g. 501 or Dataset501_QuantIFFDG)
#   TRAINER  e.g. nnUNetTrainerQuantIF_FDG, nnUNetTrainerQuantIF_PSMA
#   PLANS    e.g. nnUNetResEncUNetLPlans_MT192
#   GPUS     number of GPUs (4 = GPUs 0-3) or a comma list of GPU ids (0,2); default 1.
#            With several GPUs each GPU trains one fold at a time (folds are dealt round-robin).
# Options:
#   --dry-run            print the commands instead of running them
#   --pretrained FILE    -pretrained_weights for folds that start from scratch (e.g. quantif pretrained convert)
#   --folds "0 1 2 3 4"  folds to train (default all five)
#   --configuration C    default 3d_fullres
#   --device D           cuda (default), cpu or mps
#   --log-dir DIR        per-fold logs (default ./train_logs)
# A fold with checkpoint_final.pth is skipped; a fold with checkpoint_latest.pth or checkpoint_best.pth
# resumes with --c. Needs the nnU-Net variables and nnUNet_extTrainer: eval "$(quantif env --workspace WS)".
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

DRY=0; PRETRAINED=""; FOLDS="0 1 2 3 4"; CONF="3d_fullres"; DEVICE="cuda"; LOG_DIR="./train_logs"
POS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --pretrained) PRETRAINED="$2"; shift ;;
    --folds) FOLDS="$2"; shift ;;
    --configuration) CONF="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    --log-dir) LOG_DIR="$2"; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "train_5fold.sh: unknown option $1" >&2; usage ;;
    *) POS+=("$1") ;;
  esac
  shift
done
[ ${#POS[@]} -ge 3 ] && [ ${#POS[@]} -le 4 ] || usage
DATASET="${POS[0]}"; TRAINER="${POS[1]}"; PLANS="${POS[2]}"; GPUS="${POS[3]:-1}"

if [[ "$GPUS" == *,* ]]; then IFS=',' read -r -a GPU_IDS <<< "$GPUS"
elif [[ "$GPUS" =~ ^[0-9]+$ ]] && [ "$GPUS" -ge 1 ]; then GPU_IDS=(); for ((g = 0; g < GPUS; g++)); do GPU_IDS+=("$g"); done
else echo "train_5fold.sh: GPUS must be a count >= 1 or a comma list of ids, got '$GPUS'" >&2; exit 2; fi
read -r -a FOLD_LIST <<< "$FOLDS"

# results folder of this dataset (for resuming); empty if nnUNet_results is unset or nothing was trained yet
dataset_dir=""
if [ -n "${nnUNet_results:-}" ]; then
  if [[ "$DATASET" =~ ^[0-9]+$ ]]; then
    dataset_dir=$(compgen -G "${nnUNet_results}/Dataset$(printf %03d "$((10#$DATASET))")_*" | head -n 1 || true)
  else
    dataset_dir="${nnUNet_results}/${DATASET}"
  fi
fi
if [ $DRY -eq 0 ] && [ -z "${nnUNet_extTrainer:-}" ]; then
  echo "train_5fold.sh: nnUNet_extTrainer is not set; run: eval \"\$(quantif env --workspace WS)\"" >&2; exit 2
fi
if [ -n "$PRETRAINED" ] && [ $DRY -eq 0 ] && [ ! -f "$PRETRAINED" ]; then
  echo "train_5fold.sh: pretrained weights $PRETRAINED not found" >&2; exit 2
fi

fold_command() {  # prints the nnUNetv2_train command of one fold, or nothing if the fold is finished
  local fold=$1 gpu=$2 fdir="" extra=()
  [ -n "$dataset_dir" ] && fdir="${dataset_dir}/${TRAINER}__${PLANS}__${CONF}/fold_${fold}"
  if [ -n "$fdir" ] && [ -f "$fdir/checkpoint_final.pth" ]; then return 0; fi
  if [ -n "$fdir" ] && { [ -f "$fdir/checkpoint_latest.pth" ] || [ -f "$fdir/checkpoint_best.pth" ]; }; then
    extra=(--c)
  elif [ -n "$PRETRAINED" ]; then
    extra=(-pretrained_weights "$PRETRAINED")
  fi
  local cmd=(nnUNetv2_train "$DATASET" "$CONF" "$fold" -tr "$TRAINER" -p "$PLANS" -device "$DEVICE" "${extra[@]}")
  local prefix=""
  [ "$DEVICE" = "cuda" ] && prefix="CUDA_VISIBLE_DEVICES=$gpu "
  printf '%s' "$prefix"; printf '%q ' "${cmd[@]}"; echo
}

n_gpu=${#GPU_IDS[@]}
declare -a QUEUES
i=0
for fold in "${FOLD_LIST[@]}"; do
  [[ "$fold" =~ ^[0-4]$ ]] || { echo "train_5fold.sh: fold must be 0-4, got '$fold'" >&2; exit 2; }
  if [ -z "$(fold_command "$fold" 0)" ]; then echo "# fold $fold: checkpoint_final.pth exists, skipped"; continue; fi
  slot=$((i % n_gpu)); i=$((i + 1))
  QUEUES[$slot]="${QUEUES[$slot]:-} $fold"   # deal the unfinished folds round-robin over the GPUs
done

if [ $DRY -eq 1 ]; then
  for slot in "${!GPU_IDS[@]}"; do
    for fold in ${QUEUES[$slot]:-}; do fold_command "$fold" "${GPU_IDS[$slot]}"; done
  done
fi
[ $DRY -eq 1 ] && exit 0

mkdir -p "$LOG_DIR"
pids=()
for slot in "${!GPU_IDS[@]}"; do
  gpu=${GPU_IDS[$slot]}
  (
    rc=0
    for fold in ${QUEUES[$slot]:-}; do
      cmd=$(fold_command "$fold" "$gpu")
      [ -z "$cmd" ] && continue
      log="$LOG_DIR/${TRAINER}_${PLANS}_fold${fold}.log"
      echo "[gpu $gpu] fold $fold: $cmd (log: $log)"
      if ! bash -c "$cmd" > "$log" 2>&1; then echo "[gpu $gpu] fold $fold FAILED, see $log" >&2; rc=1; fi
    done
    exit $rc
  ) &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
