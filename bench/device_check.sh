#!/usr/bin/env bash
# Every GPU figure the project still needs (issues 3, 6 and 15), as one script for a
# lent device (at most about 11 minutes on an H100/H200, so that it fits one session's
# 15 minutes of device time with the machine's start; each part prints as it goes and a
# part cut by its timeout keeps what it printed; run it from the repository root):
#   bash bench/device_check.sh 2>&1 | tee device_check.log
# Prints: the device; a bf16 AMID smoke run on the demo (the CUDA + autocast
# path of the trainer, RNNs included) and a bf16 stacked sweep, eager and
# compiled; extraction throughput (CNN14 and DenseNet-121 with bf16, model-only
# vs pipeline from video files and from frame folders, decode scaling, wav2vec2
# length bucketing); training throughput (trainer vs reference loop, 16-member
# stack, size scaling, compile); the vmapped stack against the earlier hand-written one.
set -euo pipefail
python -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
work=$(mktemp -d)
cp params.yaml "$work/params.yaml"
(
  cd "$work"
  amid-extract demo --set demo.n_per_class=30 >/dev/null
  amid-extract prepare >/dev/null
  for m in visual audio text; do amid-extract run -m "$m" --quiet >/dev/null; done
  SECONDS=0
  amid-train -m amid -q -S train.device=cuda -S train.amp=true -S train.epochs=10 --out runs/amid
  echo "bf16 amid smoke run, 10 epochs on the demo: ${SECONDS} s (process start included)"
  amid-evaluate run runs/amid --out metrics/amid.json
  SECONDS=0
  amid-train --grid alpha -q -S train.device=cuda -S train.epochs=10 --out runs/sweeps/alpha
  echo "bf16 stacked sweep (6 members), 10 epochs: ${SECONDS} s"
  SECONDS=0
  amid-train --grid alpha -q -S train.device=cuda -S train.epochs=10 -S train.compile=true \
    --out runs/sweeps/alpha-compiled
  echo "the same, train.compile=true (inductor build included): ${SECONDS} s"
  amid-evaluate sweep runs/sweeps/alpha --out metrics/sweeps/alpha.json
)
timeout 200 python bench/extract.py --device cuda --amp bf16 --clips 512 --videos 64 \
  --frames 16 --batch 64 --workers 8 || echo "(extraction bench stopped: exit $?)"
timeout 240 python bench/train.py --device cuda --epochs 20 || echo "(training bench stopped: exit $?)"
timeout 120 python bench/sweep_vs_previous.py --repeats 1 --parts b \
  || echo "(stack comparison stopped: exit $?)"
# the stack against the same members one after another (train.device auto: the GPU)
timeout 150 python bench/stack_vs_sequential.py --ucf51 0.1 --members 8 --epochs 5 \
  || echo "(stack vs sequential stopped: exit $?)"
