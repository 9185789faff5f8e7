#!/usr/bin/env bash
# Issue 10 on MNIST with the new default tier-training (nested-distill, 5% proxy, distill-lr 1e-4), seed 0, then
# its single-tier reference. Run from the snapshot /work/exp2 (PYTHONPATH) so edits to the checkout cannot break it.
set -u
cd /work/main && . .venv/bin/activate
export PYTHONPATH=/work/exp2 FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0
COMMON=(--dataset mnist --partitioning dirichlet --dirichlet-alpha 0.3 --num-clients 100 --clients-per-round 10
  --local-epochs 1 --lr 0.05 --batch-size 32 --rounds 100 --eval-every 5 --seed 0
  --uplink "topk(0.01) > ef > uniform(4) > entropy" --downlink "topk(0.1) > uniform(4) > entropy")
TIERS=(--tiers "full=1.0 mid=0.5/int8 tiny=0.25/int8" --tier-mix "full=0.3 mid=0.4 tiny=0.3"
  --tier-uplink "full: topk(0.05) > ef > uniform(4) > entropy; mid: topk(0.1) > ef > uniform(4) > entropy; tiny: topk(0.3) > ef > uniform(4) > entropy"
  --tier-downlink "full: topk(0.3) > uniform(4) > entropy; mid: topk(0.3) > uniform(4) > entropy; tiny: uniform(6) > entropy")
fedcompress simulate "${COMMON[@]}" "${TIERS[@]}" --run-dir runs/t5/mnist_default_s0
fedcompress simulate "${COMMON[@]}" --run-dir runs/t5/mnist_single_s0
