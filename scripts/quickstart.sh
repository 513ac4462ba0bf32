#!/usr/bin/env bash
# The main job on the embedded default: train a tiny STC-LIF predictor on the Moving Fashion-MNIST subset that
# ships with the package, pick best.pt on the validation split, evaluate it on the test split and write
# runs/quickstart/{report.json,report.md,predictions.png}. Re-running resumes or re-reports (never overwrites).
source "$(dirname "$0")/_env.sh" cli,viz
stcsnn train --config configs/quickstart.yaml --out runs/quickstart --resume auto "$@"
