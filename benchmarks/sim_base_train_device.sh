#!/usr/bin/env bash
# Pretrain sim-base on one GPU of the device tool from a dataset recorded elsewhere (carried in:
# `outputs/cpu_base/data`, recorded by the `fastvla record` line of its commands.txt), across two calls:
#
#   start BUDGET_S   set up, then run `sim_base.py train` (calibration + MINUTES of training) in the
#                    background (setsid: it outlives the call while the machine is held) and follow it
#   finish BUDGET_S  follow it to the end (or BUDGET_S), then put the policy (split tar), metrics.jsonl,
#                    the calibration metrics and the exact commands in $OUT
#   once BUDGET_S    both in one call (~200 s come before the first update on an H100: ~25 s set-up,
#                    ~170 s start-up; calibration adds its 300 updates unless STEPS is set)
#
#   carry: .wheels_train (av, transformers 5.24, regex, gymnasium for CPython 3.12: benchmarks/device_wheels.sh),
#          outputs/cpu_base/data
#   env:   MINUTES (training budget after a 300-update calibration run), or STEPS (a fixed number of
#          updates, no calibration); BATCH (default 256); LR (default 1e-3); OVERRIDES (JSON for --model.preset-overrides)
# Evaluation runs elsewhere (`fastvla bench suite`): this machine's image has no MuJoCo.
set -u
stage=$1
budget=${2:-560}
t0=$(date +%s)
# PYTHONSAFEPATH: `python -m fastvla` must not put the repository root (whose fastvla/ lacks the side
# folders) on sys.path ahead of /tmp/fv.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/fv PYTHONSAFEPATH=1
W=outputs/gpu_base
# Set up once per machine: a `finish` call must not rebuild /tmp/fv under the running job. The marker is
# this script's own, so a warm machine set up by device_setup.sh (other wheels, no gymnasium) is redone
# from empty folders (pip --target does not replace what is there).
if [ ! -e /tmp/fv/.train_setup ]; then
    rm -rf /tmp/site /tmp/fv
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels_train/*.whl
    mkdir -p /tmp/fv && cp -r fastvla /tmp/fv/
    for d in envs policies datasets eval; do ln -sfn "$PWD/$d" "/tmp/fv/fastvla/$d"; done
    ln -sfn "$PWD/benchmarks" /tmp/fv/benchmarks
    python3 -c "import torch, transformers; print(torch.__version__, torch.cuda.get_device_name(0), transformers.__version__)"
    touch /tmp/fv/.train_setup
fi
. benchmarks/_device_job.sh  # left, follow
bring_back() {
    tar cf - -C $W/train policy | split -b 15M - "$OUT/policy.tar.part-"
    cp $W/commands.txt $W/train/logs/metrics.jsonl $W/job.log "$OUT/" 2>/dev/null
    cp $W/calibration/logs/metrics.jsonl "$OUT/calibration_metrics.jsonl" 2>/dev/null
    ls -la "$OUT"
}
case $stage in
start | once)
    mkdir -p $W
    cp outputs/cpu_base/commands.txt $W/commands.txt 2>/dev/null
    sed -i '2,$d' $W/commands.txt  # keep the record line; the train lines are appended by sim_base.py
    setsid nohup bash -c "python3 benchmarks/sim_base.py train --work $W --data outputs/cpu_base/data \
        --minutes ${MINUTES:-6.5} --steps ${STEPS:-0} --batch-size ${BATCH:-256} --lr ${LR:-1e-3} --calibration-steps 300 --preset-overrides '${OVERRIDES:-}'; echo JOB_DONE rc=\$?" \
        > "$W/job.log" 2>&1 &
    echo $! > "$W/job.pid"
    follow 15
    if [ "$stage" = once ]; then bring_back; fi
    ;;
finish)
    follow 30
    bring_back
    ;;
esac
