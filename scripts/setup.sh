#!/usr/bin/env bash
# Create .venv in the repository and install flare_vlp into it.
# torch is installed FIRST and pinned, so no dependency ever makes pip resolve an unpinned (multi-GB CUDA) torch.
# Override for a GPU machine, e.g.:  FLARE_VLP_TORCH="torch==2.5.1" FLARE_VLP_TORCH_INDEX=https://... make test
# With the `test` extras it also installs Debian's chromium + chromium-driver (the dashboard's browser test) when
# they are missing and apt-get can run (as root); FLARE_VLP_BROWSER=0 skips that (the test then skips, saying why).
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
if [ "$EXTRAS" = "test" ] && [ "${FLARE_VLP_BROWSER:-1}" != "0" ] && \
   { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium + chromium-driver (Debian) for the dashboard's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "[setup] WARNING: could not install chromium; tests/fl/test_dashboard.py's browser walk will skip"
  else
    echo "[setup] chromium/chromedriver missing and apt-get not usable here; the dashboard browser test will skip"
  fi
fi
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, monai, nvflare; print("torch", torch.__version__, "monai", monai.__version__, "nvflare", nvflare.__version__)')"
