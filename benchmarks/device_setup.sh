# Source this on a GPU machine of the device tool (from the repository root) before running the GPU
# benchmarks or tests: `. benchmarks/device_setup.sh`.
#
# The device image has torch, triton, peft, accelerate, pytest but not bitsandbytes or PyAV, and an older
# transformers; carry their wheels in an ignored .wheels/ folder (see benchmarks/NOTES.md). The LeRobot
# fixtures the training GPU tests read are part of the repository (tests/fixtures/).
# fastvla is made importable as a package tree (core folder copied, side folders linked), not by putting the
# repository root on sys.path: there our datasets/ folder would shadow Hugging Face `datasets`.
rm -rf /tmp/site  # a warm machine keeps the last call's: pip --target would not replace it
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels/*.whl
rm -rf /tmp/fv && mkdir -p /tmp/fv && cp -r fastvla /tmp/fv/
for d in envs policies datasets eval; do ln -sfn "$PWD/$d" "/tmp/fv/fastvla/$d"; done
export PYTHONPATH=/tmp/site:/tmp/fv
export PYTHONUNBUFFERED=1
# PYTHONSAFEPATH: `python3 -c` from the repository root must not put the in-tree fastvla/ (without its side
# folders) ahead of /tmp/fv on sys.path.
export PYTHONSAFEPATH=1
python3 -c "import torch, transformers, bitsandbytes, fastvla.datasets; print('device setup:', torch.__version__, torch.cuda.get_device_name(0), 'transformers', transformers.__version__, 'bnb', bitsandbytes.__version__)"
