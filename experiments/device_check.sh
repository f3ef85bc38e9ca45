#!/usr/bin/env bash
# GPU readiness check, one prepared run: parity figures against torch CUDA, the update step
# against device bandwidth, the CIFAR CNN's training step (see experiments/device_check.py).
#
#   bash experiments/device_check.sh                         # on a GPU machine, < 8 minutes
#   bash experiments/device_check.sh --cifar-npz c10.npz     # real CIFAR-10 images for the CNN
#   bash experiments/device_check.sh --dry-run               # CPU, tiny sizes, < 1 minute
#
# Uses the machine's own python3 with jax (CUDA), torch (CUDA), flax and optax (PYTHON=... to
# choose another); jaxopt_lab is imported from this checkout. Results: device_check.{json,md} in
# $OUT when set (the device runner's output folder), else experiments/results/device. Each
# section's results are written as soon as it is done, so a timeout keeps what was measured.
# Without --cifar-npz it uses $CIFAR_NPZ, else ../shared/data/cifar10_test_first1000.npz or
# shared/data/... when present, else a generated stand-in (labelled so in the results).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT:-experiments/results/device}"

args=("$@")
if [[ " $* " != *" --cifar-npz "* ]]; then
  for npz in "${CIFAR_NPZ:-}" ../shared/data/cifar10_test_first1000.npz \
    shared/data/cifar10_test_first1000.npz; do
    if [ -n "$npz" ] && [ -f "$npz" ]; then
      args+=(--cifar-npz "$npz")
      break
    fi
  done
fi

"$PYTHON" -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "| torch",
  torch.__version__, "cuda", torch.cuda.is_available())'
# 470 s: the sections' own budgets keep the run near 6 minutes; SIGINT first, then SIGKILL.
exec timeout --signal=INT --kill-after=20 470 \
  "$PYTHON" experiments/device_check.py --out "$OUT_DIR" "${args[@]}"
