#!/usr/bin/env bash
# The sim-base pretraining run on one GPU machine of the device tool, split into calls of <= 10 minutes.
#
#   start BUDGET_S   set up, record the suite (16 cores), then start `sim_base.py train` and `eval` in the
#                    background (setsid: they outlive the call while the machine is held) and follow them
#   follow BUDGET_S  follow the background job
#   finish BUDGET_S  follow it to the end (or BUDGET_S), then put policy, results, media and logs in $OUT
#
# Needs carry: .wheels (mujoco, gymnasium, av, bitsandbytes, transformers 5.24, regex, pyopengl for
# CPython 3.12) and .gl (EGL loader debs; see the device tool's README).
set -u
stage=$1
budget=${2:-560}
t0=$(date +%s)
W=outputs/sim_base
# PYTHONSAFEPATH: `python -m fastvla` must not put the repository root (whose fastvla/ lacks the side
# folders) on sys.path ahead of /tmp/fv.
export MUJOCO_GL=egl PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
if [ ! -d /tmp/fv ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    . benchmarks/device_setup.sh
    ln -sfn "$PWD/benchmarks" /tmp/fv/benchmarks
else
    export PYTHONPATH=/tmp/site:/tmp/fv
fi
mkdir -p "$W"
. benchmarks/_device_job.sh  # left, follow
case $stage in
start)
    set -o pipefail
    python3 benchmarks/sim_base.py record --work "$W" --episodes "${EPISODES:-1000}" 2>&1 \
        | grep -v "episode/s\]" | tail -20 || exit 1
    setsid nohup bash -c "python3 benchmarks/sim_base.py train --work $W --minutes ${MINUTES:-12} && \
        python3 benchmarks/sim_base.py eval --work $W; echo JOB_DONE rc=\$?" > "$W/job.log" 2>&1 &
    echo $! > "$W/job.pid"
    follow 15
    ;;
follow) follow 15 ;;
finish)
    follow 40
    tar cf - -C "$W/train" policy | split -b 15M - "$OUT/policy.tar.part-"
    cp "$W/suite.json" "$OUT/" 2>/dev/null
    (cd "$W" && tar cf "$OUT/media.tar" $(ls suite/*/*/videos/summary.gif suite/fp32/*/videos/*/eval_episode_0.mp4 \
        suite/*/*/report.md suite/*/*/eval_info.json 2>/dev/null))
    (cd "$W" && tar cf "$OUT/logs.tar" job.log commands.txt train/logs/metrics.jsonl calibration/logs/metrics.jsonl \
        train/config.yaml 2>/dev/null)
    ls -la "$OUT"
    ;;
esac
