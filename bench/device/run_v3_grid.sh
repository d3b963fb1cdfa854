#!/usr/bin/env bash
# Device box: FedDRA benchmark v3 seed grid (5 seeds in parallel, in-process runner, fp32 on the GPU).
set -uo pipefail
T0=$SECONDS
PY=${PY:-python3}
OUTDIR=${OUTDIR:-/tmp/v3}; LOGS=${LOGS:-/tmp/v3logs}; SITE=${SITE:-/tmp/site}; MODELS=${MODELS:-/tmp/models}
BUDGET=${BUDGET:-470}; SEEDS=${SEEDS:-"0 1 2 3 4"}; DEVICE=${DEVICE:-cuda}
mkdir -p "$LOGS" "$OUTDIR"
if [ -z "${SKIP_PIP:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl || exit 3
fi
$PY .gpu/shim.py "$SITE" "$MODELS" || exit 4
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
$PY -c "import torch, monai, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__, 'transformers', transformers.__version__)" || exit 5
ORDER="fedavg fedavg_iid feddra fedaid centralized local fedprox fedavg_uniform feddra_no_anchor feddra_rho0"
pids=()
for s in $SEEDS; do
  $PY bench/bench_feddra_v3.py --seeds "$s" --device "$DEVICE" --out "$OUTDIR" --runs $ORDER > "$LOGS/seed$s.log" 2>&1 &
  pids+=($!)
done
while [ $((SECONDS - T0)) -lt "$BUDGET" ]; do
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 5
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null && echo "stopped unfinished seed process $p"; done
sleep 2
echo "grid wall $((SECONDS - T0)) s"
$PY bench/bench_feddra_v3.py --seeds $SEEDS --out "$OUTDIR" --tabulate --archive /tmp/archive/feddra_v3 > "$LOGS/results.txt" 2>&1
cat "$LOGS/results.txt"
grep -h "^==" "$LOGS"/seed*.log
grep -h -B2 -A12 "Traceback" "$LOGS"/seed*.log | head -60
tar czf "${OUT:-/tmp}/v3.tgz" -C /tmp archive v3logs "${OUTDIR#/tmp/}/results.md" "${OUTDIR#/tmp/}/results.json" "${OUTDIR#/tmp/}/plots" 2>/dev/null
echo "total $((SECONDS - T0)) s"
