#!/usr/bin/env bash
# Prepare autoPET(-style) data for QuantIF training, per tracer dataset:
#   quantif convert -> nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment (ResEnc-L planner)
#   -> quantif plans --preset resencl192 (nnUNetResEncUNetLPlans_MT192: MultiTalent ResEnc-L, 192^3 patch,
#      MultiTalent's CT/PET intensity properties, its own data folder) -> nnUNetv2_preprocess (those plans)
#   -> quantif organs and quantif clicks sidefiles (side files)
#   -> quantif pretrained convert (MultiTalent init, if --multitalent is given).
#
# Usage: scripts/prepare_autopet.sh [options] -i DIR -d N
#   -i, --input DIR        autoPET-style folder (imagesTr/, labelsTr/, clicks/)
#   -d, --dataset N        FDG -> Dataset<N>_QuantIFFDG, PSMA -> Dataset<N+1>_QuantIFPSMA
#   --workspace WS         put nnUNet_raw/_preprocessed/_results under WS (default: the variables already set)
#   --tracers LIST         fdg,psma (default)
#   --totalseg DIR         existing TotalSegmentator outputs (<case>_total, <case>_head_glands_cavities)
#   --run-totalsegmentator run TotalSegmentator for the organ maps (weights must be installed)
#   --multitalent FILE     MultiTalent checkpoint -> <WS or .>/multitalent_init_<id>.pth
#   --stem NAME            MultiTalent stem (default 221, autoPET II CT+PET)
#   --workers W            processes (default 4)
#   --dry-run              print the commands instead of running them
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

DRY=0; SRC=""; DSID=""; WS=""; TRACERS="fdg,psma"; TOTALSEG=""; RUN_TS=0; MT=""; STEM="221"; WORKERS=4
while [ $# -gt 0 ]; do
  case "$1" in
    -i|--input) SRC="$2"; shift ;;
    -d|--dataset) DSID="$2"; shift ;;
    --src|--dataset-id)  # old spellings of --input and --dataset
      echo "prepare_autopet.sh: note: $1 is an old spelling of $([ "$1" = --src ] && echo --input || echo --dataset) (it will be removed)" >&2
      if [ "$1" = --src ]; then SRC="$2"; else DSID="$2"; fi; shift ;;
    --workspace) WS="$2"; shift ;;
    --tracers) TRACERS="$2"; shift ;;
    --totalseg) TOTALSEG="$2"; shift ;;
    --run-totalsegmentator) RUN_TS=1 ;;
    --multitalent) MT="$2"; shift ;;
    --stem) STEM="$2"; shift ;;
    --workers) WORKERS="$2"; shift ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage 0 ;;
    *) echo "prepare_autopet.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[ -n "$SRC" ] && [ -n "$DSID" ] || usage
[[ "$DSID" =~ ^[0-9]+$ ]] || { echo "prepare_autopet.sh: --dataset must be a number" >&2; exit 2; }
[ -n "$TOTALSEG" ] && [ $RUN_TS -eq 1 ] && { echo "prepare_autopet.sh: --totalseg and --run-totalsegmentator exclude each other" >&2; exit 2; }

run() {  # print (dry run) or run one command
  if [ $DRY -eq 1 ]; then printf '%q ' "$@"; echo; else echo "+ $*"; "$@"; fi
}

if [ -n "$WS" ]; then
  if [ $DRY -eq 1 ]; then echo "eval \"\$(quantif env --workspace $(printf %q "$WS"))\""; fi
  eval "$(quantif env --workspace "$WS")"
fi
PRE="${nnUNet_preprocessed:-\$nnUNet_preprocessed}"
OUTDIR="${WS:-.}"

convert=(quantif convert -i "$SRC" --out "${nnUNet_raw:-\$nnUNet_raw}" -d "$DSID" --tracers "$TRACERS"
         --workers "$WORKERS")
[ -n "$TOTALSEG" ] && convert+=(--totalseg "$TOTALSEG")
run "${convert[@]}"

IFS=',' read -r -a TRACER_LIST <<< "$TRACERS"
for tracer in "${TRACER_LIST[@]}"; do
  case "$tracer" in
    fdg) id=$DSID; name="Dataset$(printf %03d "$id")_QuantIFFDG" ;;
    psma) id=$((DSID + 1)); name="Dataset$(printf %03d "$id")_QuantIFPSMA" ;;
    *) echo "prepare_autopet.sh: unknown tracer $tracer" >&2; exit 2 ;;
  esac
  run nnUNetv2_extract_fingerprint -d "$id" -np "$WORKERS" --verify_dataset_integrity
  run nnUNetv2_plan_experiment -d "$id" -pl nnUNetPlannerResEncL
  run quantif plans --dataset "$id" --preset resencl192 --source-plans nnUNetResEncUNetLPlans
  run nnUNetv2_preprocess -d "$id" -plans_name nnUNetResEncUNetLPlans_MT192 -c 3d_fullres -np "$WORKERS"
  organs=(quantif organs --dataset "$id" -p nnUNetResEncUNetLPlans_MT192 -c 3d_fullres --workers "$WORKERS")
  [ $RUN_TS -eq 1 ] && organs+=(--run-totalsegmentator)
  run "${organs[@]}"
  run quantif clicks sidefiles --dataset "$id" -p nnUNetResEncUNetLPlans_MT192 -c 3d_fullres
  if [ -n "$MT" ]; then
    run quantif pretrained convert --checkpoint "$MT" --plans "$PRE/$name/nnUNetResEncUNetLPlans_MT192.json" \
        --configuration 3d_fullres --stem "$STEM" --out "$OUTDIR/multitalent_init_${id}.pth"
  fi
  trainer=nnUNetTrainerQuantIF_FDG; [ "$tracer" = psma ] && trainer=nnUNetTrainerQuantIF_PSMA
  pre=""; [ -n "$MT" ] && pre="--pretrained $OUTDIR/multitalent_init_${id}.pth "
  echo "# next: scripts/train_5fold.sh ${pre}$id $trainer nnUNetResEncUNetLPlans_MT192 [GPUS]"
done
