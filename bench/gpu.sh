#!/usr/bin/env bash
# The paper profile (68 folds, 800 epochs, (2, 2, 8)) on one CUDA GPU, as one prepared script.
#
#   bash bench/gpu.sh prepare        here: copy the release ($HTNET_DATA) and the MTCNN landmark
#                                    cache into .gpu/ (git-ignored; carry it to the GPU machine)
#   bash bench/gpu.sh run [ARGS]     there: train with the grouped trainer (bf16 autocast, float32
#                                    master weights, fused Adam, folds grouped to fit memory);
#                                    the run and a timing log go to $OUT (default ./gpu-out).
#                                    ARGS pass to `htnet train`, e.g. --set epochs=2 for a dry run,
#                                    or --ablation layers=2 for a grid point of notebooks 06-09
#                                    (Table 5 first: it also reports time); copy $OUT/runs/* into
#                                    results/runs/ and the notebooks show it beside the cpu rows.
#
# The GPU machine needs torch, einops, opencv, pandas, scikit-learn, scikit-image and tqdm;
# facenet-pytorch is not needed there because the landmarks come from the carried cache.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    : "${HTNET_DATA:?set HTNET_DATA to the release folder}"
    mkdir -p .gpu/cache
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu/data && cp -r "$HTNET_DATA" .gpu/data && chmod -R u+w .gpu/data
    HTNET_CACHE=.gpu/cache .venv/bin/python -c "
from htnetlib.data import load_composite
from htnetlib.regions import find_landmarks
d = load_composite('.gpu/data')
for mode in ('official', 'corrected'):
    print(mode, int((~find_landmarks(d, mode).found).sum()), 'apex images without a face')"
    du -sh .gpu
    ;;
  run)
    shift
    OUT="${OUT:-gpu-out}"
    mkdir -p "$OUT"
    export HTNET_CACHE=.gpu/cache PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    PY="${PYTHON:-python3}"
    {
      echo "start $(date -u +%FT%TZ)"
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
      start=$(date +%s)
      "$PY" -m htnetlib.cli train --profile paper --trainer grouped --threads 0 \
        --data .gpu/data --out "$OUT/runs" "$@"
      echo "wall_seconds $(( $(date +%s) - start ))"
      echo "end $(date -u +%FT%TZ)"
    } 2>&1 | tee "$OUT/gpu_timing.log"
    ;;
  *)
    sed -n '2,15p' "$0"; exit 2 ;;
esac
