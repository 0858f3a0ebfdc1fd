#!/usr/bin/env bash
# The image's install steps, in one place: the Dockerfile runs this script, and so does
# tests/service/test_deploy.py (into a scratch virtualenv), so the two cannot drift apart.
#
#   docker/install.sh [cpu|cu124|...]     the torch build to install (default: cpu)
#
# PYTHON picks the interpreter; PIP_FLAGS adds pip options (the tests pass --no-index).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_BUILD="${1:-cpu}"
PYTHON="${PYTHON:-python3}"
read -r -a FLAGS <<< "${PIP_FLAGS:-}"

# torch first, from its own index: installed as a plain dependency it would be the multi-GB CUDA
# build even in a CPU image.
"$PYTHON" -m pip install --no-cache-dir "${FLAGS[@]}" "torch==2.13.0" \
    --extra-index-url "https://download.pytorch.org/whl/${TORCH_BUILD}"
# the service and its SDK (clients/python, which `ntk kernel/predict --url` imports), in one resolve
"$PYTHON" -m pip install --no-cache-dir "${FLAGS[@]}" . ./clients/python
"$PYTHON" -m cli --help > /dev/null
"$PYTHON" -c "import ntk_client"
