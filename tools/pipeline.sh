#!/usr/bin/env bash
# Every long job of the project, in order: training and export of the shipped networks, then the stored
# reference results. Each step resumes where it stopped (training from its checkpoint, `nxbar reproduce`
# from the cells already in its CSV, `nxbar threats` from the attackers in its JSON.partial) or is skipped
# when its output exists, so after a session ends the same command simply goes on:
#
#   mkdir -p runs && setsid nohup nice -n 10 bash tools/pipeline.sh >> runs/pipeline.log 2>&1 < /dev/null &
#
# Outputs land in the working tree (weights/, reference_results/); committing them is left to a person,
# once each is final. Everything a step resumes from (training checkpoints, nxbar's cache of mapped weights
# and adversarial inputs, the lock) lives in runs/ of the checkout (ignored by git), not in ~/.cache, so that
# it travels with the tree when the work moves to a fresh machine. One instance at a time (flock). While it
# runs, change this file only by replacing it (write a copy, then mv): bash reads a running script as it
# goes, and an edit in place corrupts that.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
export NXBAR_CACHE_DIR="$PWD/runs/cache"
exec 9> runs/pipeline.lock
flock -n 9 || { echo "tools/pipeline.sh is already running"; exit 1; }

step() { echo "== $(date -u +%FT%TZ) $*"; "$@"; }
train() {  # train() MODEL EPOCHS [more train_export options]: skipped once weights/<stem>.json exists
    local stem="$1_cifar10"; [[ " $* " == *" --quanos-from "* ]] && stem="$1q_cifar10"
    [[ -f "weights/$stem.json" ]] ||
        step python3 tools/train_export.py --model "$1" --epochs "$2" --checkpoint-dir "runs/train/$stem" "${@:3}"
}
accurate() {  # accurate() STEM: stop the pipeline when an export missed the shipped networks' 90% clean-accuracy target
    python3 - "$1" <<'PY' || { echo "== $(date -u +%FT%TZ) $1 is below the 90% target: pipeline stopped"; exit 1; }
import json, sys
a = json.load(open(f"weights/{sys.argv[1]}.json"))["accuracy"]["embedded_lossless_test"]["accuracy"]
print(f"{sys.argv[1]}: clean accuracy {100 * a:.2f}% on the 1,000 embedded test images (target 90%)")
sys.exit(0 if a >= 0.90 else 1)
PY
}
evaluate() {  # the main command on the shipped VGG8 (1,000 images, PGD, SW/SH/HH, 32x32), timed in its json
    local out="reference_results/evaluate_vgg8_xbar32_pgd.json"
    [[ -f "$out" ]] || step python3 cli.py evaluate --model vgg8 --xbar 32 --attack pgd --json "$out"
}
finished() {  # finished() NAME: reference_results/NAME.json exists and says its run finished every cell
    python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished") else 1)' \
        "reference_results/$1.json" 2>/dev/null
}
reproduce() { for name in "$@"; do finished "$name" || step python3 cli.py reproduce "$name"; done; }
threats() {  # threats() MODEL SIZE: attacker x victim matrix on SIZE x SIZE crossbars, 500 images (11 PGD runs)
    local out="reference_results/threats/$1_xbar$2.json"
    mkdir -p reference_results/threats
    [[ -f "$out" ]] || step python3 cli.py threats --model "$1" --xbar "$2" --n 500 --json "$out"
}

train vgg8 15
accurate vgg8_cifar10
evaluate
threats vgg8 32; threats vgg8 16; threats vgg8 64
train vgg8 3 --quanos-from weights/vgg8_cifar10
train vgg16 20
accurate vgg16_cifar10
reproduce nf table1 table2 table3 fig9
train vgg16 3 --quanos-from weights/vgg16_cifar10
reproduce fig10 fig8a fig4 fig5 fig8b fig6
# the robustness study (docs/protocol.md section 12), resumable cell by cell; its study.json says when it finished
python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished") else 1)' \
    reference_results/robustness/study.json 2>/dev/null || step python3 cli.py robustness
# the adaptive and stochastic attackers at the study's points (docs/protocol.md section 13), resumable
[[ -f reference_results/robustness/stochastic.json ]] || step python3 cli.py adaptive
step python3 cli.py reproduce --figures
step python3 cli.py reproduce --report
echo "== $(date -u +%FT%TZ) pipeline finished"
