#!/usr/bin/env bash
# Fetch and slim the CPython 3.12 wheels the device tool's GPU machine lacks, into the git-ignored folders
# the device scripts carry (the tool's carry limit is 64 MiB for the tree and everything carried):
#
#   .wheels/        bitsandbytes (only its CPU and CUDA 13.x libraries: 43 -> ~8 MB), av, transformers
#                   (slimmed, below), regex: for benchmarks/device_setup.sh (gpu.py, the GPU tests)
#   .wheels_train/  av, transformers (slimmed), regex, gymnasium, farama-notifications: for
#                   benchmarks/sim_base_train_device.sh (~38 MB; with the 21 MB 1,500-episode dataset it
#                   leaves ~3 MB for the tree: move fastvla/checkpoints/sim-base/model.safetensors and the
#                   docs GIFs aside for that call)
#
# transformers is slimmed to the model families FastVLA builds (llama, resnet, siglip, vit, clip, dinov2,
# gemma, qwen2, mistral, bert, gpt2) plus `auto` and what `auto` imports (encoder_decoder), and `bloom`,
# which peft imports at start-up (`from transformers import BloomPreTrainedModel`): 13.5 -> 2.4 MB.
# Run from the repository root with the project's venv active (it needs pip); the versions are the ones
# the project was tested with on the device (torch there is its own 2.11 build).
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP="auto|bloom|llama|resnet|siglip|vit|clip|dinov2|gemma|gemma2|qwen2|mistral|bert|gpt2|encoder_decoder|deprecated"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() {  # fetch DEST SPEC...: py3.12 manylinux x86-64 wheels, no dependencies
    local dest=$1
    shift
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$dest" "$@"
}
slim() {  # slim WHEEL FIND-ARGS...: delete the files find selects inside the wheel, fix RECORD, re-zip in place
    local wheel=$1 dir="$tmp/slim"
    shift
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && python -m zipfile -e "$wheel" .)
    (cd "$dir" && find "$@" -prune -exec rm -rf {} +)
    (cd "$dir" && python - <<'EOF'
import csv, glob, os
record = glob.glob("*.dist-info/RECORD")[0]
rows = [r for r in csv.reader(open(record)) if r and (os.path.exists(r[0]) or r[0] == record)]
csv.writer(open(record, "w", newline="")).writerows(rows)
EOF
    )
    rm -f "$wheel"
    (cd "$dir" && python -c "
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for root, _dirs, files in os.walk('.'):
        for f in files:
            z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), '.'))
" "$wheel")
}
fetch "$tmp/w" bitsandbytes==0.50.2 av==18.1.0 transformers==5.24.0 regex==2026.12.2 gymnasium==1.4.0 \
    farama-notifications==0.0.6
tf=$(ls "$tmp"/w/transformers-*.whl)
slim "$tf" transformers/models -mindepth 1 -maxdepth 1 -type d -regextype egrep ! -regex ".*/($KEEP)"
bnb=$(ls "$tmp"/w/bitsandbytes-*.whl)
slim "$bnb" bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda13?.so'
mkdir -p .wheels .wheels_train
rm -f .wheels/*.whl .wheels_train/*.whl
cp "$tmp"/w/{bitsandbytes,av,transformers,regex}-*.whl .wheels/
cp "$tmp"/w/{av,transformers,regex,gymnasium,farama_notifications}-*.whl .wheels_train/
du -sh .wheels .wheels_train
