#!/usr/bin/env bash
# The image's install steps, in one place: the Dockerfile runs this script, and so does
# tests/service/test_deploy.py (into a fresh virtualenv), so the two cannot drift apart.
#
#   docker/install.sh [cpu|cu124|...]     the torch build to install (default: cpu)
#
# PYTHON picks the interpreter; PIP_FLAGS adds pip options; TORCH_INDEX_URL is torch's index
# (default: download.pytorch.org's for that build; empty: the indexes pip is configured with).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_BUILD="${1:-cpu}"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/${TORCH_BUILD}}"
read -r -a FLAGS <<< "${PIP_FLAGS:-}"
TORCH_INDEX=()
[[ -n $TORCH_INDEX_URL ]] && TORCH_INDEX=(--extra-index-url "$TORCH_INDEX_URL")

# torch first, from its own index: installed as a plain dependency it would be the multi-GB CUDA
# build even in a CPU image. Then the service and the SDK (`ntk kernel/predict --url` use it), each
# dependency at the version constraints.txt locks.
"$PYTHON" -m pip install --no-cache-dir "${FLAGS[@]}" -c constraints.txt "torch==2.13.0" "${TORCH_INDEX[@]}"
"$PYTHON" -m pip install --no-cache-dir "${FLAGS[@]}" -c constraints.txt . ./clients/python
"$PYTHON" -m ntk.cli --help > /dev/null
"$PYTHON" -c "import ntk_client"
