#!/usr/bin/env bash
# Pretrain sim-base on one GPU of the device tool in a single call, from a dataset recorded elsewhere
# (carried in: `outputs/cpu_base/data`, recorded by the `fastvla record` line of its commands.txt).
#
#   carry: .wheels_train (av, transformers 5.24, regex, gymnasium for CPython 3.12), outputs/cpu_base/data
#   env:   MINUTES (training budget after a 300-update calibration run), BATCH (default 256)
# Brings back the exported policy (split tar), metrics.jsonl, the calibration log and the exact commands.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels_train/*.whl
rm -rf /tmp/fv && mkdir -p /tmp/fv && cp -r fastvla /tmp/fv/
for d in envs policies datasets eval; do ln -sfn "$PWD/$d" "/tmp/fv/fastvla/$d"; done
ln -sfn "$PWD/benchmarks" /tmp/fv/benchmarks
export PYTHONPATH=/tmp/site:/tmp/fv
python3 -c "import torch, transformers; print(torch.__version__, torch.cuda.get_device_name(0), transformers.__version__)"
W=outputs/gpu_base
mkdir -p $W
cp outputs/cpu_base/commands.txt $W/commands.txt 2>/dev/null
sed -i '2,$d' $W/commands.txt  # keep the record line; the train lines are appended by sim_base.py
python3 benchmarks/sim_base.py train --work $W --data outputs/cpu_base/data --minutes "${MINUTES:-6.5}" \
    --batch-size "${BATCH:-256}" --calibration-steps 300 2>&1 | grep -v "it/s\]\|frame/s\]" | tail -40
tar cf - -C $W/train policy | split -b 15M - "$OUT/policy.tar.part-"
cp $W/commands.txt $W/train/logs/metrics.jsonl "$OUT/" 2>/dev/null
cp $W/calibration/logs/metrics.jsonl "$OUT/calibration_metrics.jsonl" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
ls -la "$OUT"
