#!/usr/bin/env bash
# Install the peer libraries of bench/peers.py into the project's virtual environment
# (issue 5) without touching its torch:
#   * pyhessian==0.1 and hessian-eigenthings==1.0.0a5 declare only numpy/scipy/torch/tqdm;
#     they are installed with their dependencies under a constraint that pins torch to the
#     version already installed (pip fails rather than replace it).
#   * backpack-for-pytorch==1.7.1 and curvlinops-for-pytorch==3.0.1 declare torchvision,
#     which would pull a multi-GB CUDA torch: installed with --no-deps, and their real
#     runtime dependencies (einops, unfoldNd, packaging, einconv, linear_operator,
#     opt-einsum, tqdm, scipy, numpy) by hand, under the same constraint.
# Afterwards torch.__version__ must be unchanged and every peer must import.
# Usage: bench/install_peers.sh [VENV]   (default .venv; VENV=... in the environment works too)
set -euo pipefail
VENV="${1:-${VENV:-.venv}}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_peers: no python at $PY (run 'make setup' first)" >&2; exit 1; }

TORCH_BEFORE="$("$PY" -c 'import torch; print(torch.__version__)')"
CONSTRAINT="$(mktemp)"
trap 'rm -f "$CONSTRAINT"' EXIT
echo "torch==${TORCH_BEFORE}" >"$CONSTRAINT"

PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --constraint "$CONSTRAINT" \
  "pyhessian==0.1" \
  "hessian-eigenthings==1.0.0a5" \
  "einops==0.8.2" "unfoldNd==0.2.3" "einconv==0.1.0" "linear_operator==0.6.1" \
  "opt-einsum==3.4.0" packaging tqdm scipy numpy
"${PIP[@]}" --no-deps "backpack-for-pytorch==1.7.1" "curvlinops-for-pytorch==3.0.1"

TORCH_AFTER="$("$PY" -c 'import torch; print(torch.__version__)')"
if [ "$TORCH_AFTER" != "$TORCH_BEFORE" ]; then
  echo "install_peers: torch changed from $TORCH_BEFORE to $TORCH_AFTER" >&2
  exit 1
fi
"$PY" - <<'PY'
import importlib
import importlib.metadata as md

import torch

for mod, dist in [
    ("pyhessian", "pyhessian"),
    ("hessian_eigenthings", "hessian-eigenthings"),
    ("backpack", "backpack-for-pytorch"),
    ("curvlinops", "curvlinops-for-pytorch"),
]:
    importlib.import_module(mod)
    print(f"install_peers: {dist} {md.version(dist)} imports")
print(f"install_peers: torch {torch.__version__} unchanged")
PY
