#!/usr/bin/env bash
# Set up gudjax on one accelerator host: a venv with requirements.txt and the JAX build for
# the accelerator. Run it from anywhere inside the checkout, on EVERY host of a TPU pod
# (`python -m experiments.sweep CONFIG --launcher=tpu-pod` prints the gcloud command that
# does this with --worker=all).
#
#   bash experiments/tpu/setup.sh [tpu|cuda12|cuda13|cpu]      (default: tpu)
#
# Environment: PYTHON (default python3, needs 3.11+), VENV (default .venv in the checkout).
# Idempotent: a second run only checks the installation. Ends by printing the devices JAX
# sees on this host (a TPU v4-8 host: 4 devices; the pod-wide count appears once
# jax.distributed connects the hosts at the start of training).
set -euo pipefail

ACCEL="${1:-tpu}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

JAX_VERSION="$(sed -n 's/^jax==\([0-9.]*\).*/\1/p' requirements.txt)"
if [ -z "$JAX_VERSION" ]; then
  echo "error: requirements.txt pins no jax version (expected a line jax==X.Y.Z)" >&2
  exit 2
fi
case "$ACCEL" in
  tpu) EXTRA="jax[tpu]==${JAX_VERSION}" ;;
  cuda12) EXTRA="jax[cuda12]==${JAX_VERSION}" ;;
  cuda13) EXTRA="jax[cuda13]==${JAX_VERSION}" ;;
  cpu) EXTRA="" ;;
  *) echo "error: unknown accelerator '$ACCEL'; allowed: tpu, cuda12, cuda13, cpu" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
if [ -n "$EXTRA" ]; then
  "$VENV/bin/python" -m pip install -q "$EXTRA"
fi
"$VENV/bin/python" -m pip install -q --no-deps -e .

# Shared XLA compilation cache (speeds up restarts); override with JAX_COMPILATION_CACHE_DIR.
mkdir -p "${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/jax}"
"$VENV/bin/python" -c "import jax; print('gudjax setup ok on', __import__('socket').gethostname(), '| jax', jax.__version__, '|', jax.local_device_count(), 'local', jax.devices()[0].platform, 'device(s)')"
