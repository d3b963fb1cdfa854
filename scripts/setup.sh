#!/usr/bin/env bash
# Create .venv in the repository and install flare_vlp into it.
# torch is installed FIRST and pinned, so no dependency ever makes pip resolve an unpinned (multi-GB CUDA) torch.
# Override for a GPU machine, e.g.:  FLARE_VLP_TORCH="torch==2.5.1" FLARE_VLP_TORCH_INDEX=https://... make test
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLARE_VLP_VENV:-.venv}
TORCH_SPEC=${FLARE_VLP_TORCH:-torch==2.13.0}
PY=${PYTHON:-python3}
EXTRAS=${1:-test}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  if [ -n "${FLARE_VLP_TORCH_INDEX:-}" ]; then
    "${PIP[@]}" "$TORCH_SPEC" --index-url "$FLARE_VLP_TORCH_INDEX"
  else
    "${PIP[@]}" "$TORCH_SPEC"
  fi
fi
stamp="$VENV/.flare_vlp-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing flare-vlp[$EXTRAS] (editable)"
  "${PIP[@]}" -e ".[$EXTRAS]"
  touch "$stamp"
fi
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, monai, nvflare; print("torch", torch.__version__, "monai", monai.__version__, "nvflare", nvflare.__version__)')"
