#!/usr/bin/env bash
# The paper profile (68 folds, 800 epochs, (2, 2, 8)) on one CUDA GPU, as one prepared script.
#
#   bash bench/gpu.sh prepare        here: copy the release ($HTNET_DATA) and the MTCNN landmark
#                                    cache into .gpu/ (git-ignored; carry it to the GPU machine)
#   bash bench/gpu.sh bench [ARGS]   there, under 2 minutes: the straightforward loop (one fold,
#                                    float32, official kernels) against the grouped trainer at
#                                    the group size a dry run picks, and both projected to a
#                                    whole LOSO: $OUT/bench.json and $OUT/bench.log. ARGS pass to
#                                    `bench/train_benchmark.py --gpu` (--profile, --epochs, ...).
#   bash bench/gpu.sh run [ARGS]     there: a short dry run at the run's size picks the group
#                                    size (halved if memory runs out), then the grouped trainer
#                                    (bf16 autocast, float32 master weights, fused Adam) trains,
#                                    storing each group's folds as it ends. Training stops after
#                                    $GPU_TIME_LIMIT s (default 540), so a run cut off is still
#                                    packed: $OUT/run-<run-id>.tar.gz (the run folder, finished
#                                    or config.json and folds/ so far) and $OUT/run.log. ARGS
#                                    pass to `htnet train`, e.g. --set epochs=2, or
#                                    --ablation layers=2 for a grid point of notebooks 06-09.
#                                    Exit 3: cut off, carry the archive on (resume).
#   bash bench/gpu.sh resume FILE    here: unpack a run archive into .gpu/runs/; with .gpu
#                                    carried again, `run` with the same ARGS trains only the
#                                    missing folds. A finished run goes into results/runs/:
#                                    tar xzf run-<run-id>.tar.gz -C results/runs
#
# Environment: OUT (default ./gpu-out), PYTHON (default python3; prepare uses .venv/bin/python),
# GPU_DIR (default .gpu: data/, cache/ and runs/), GPU_TIME_LIMIT. Without a GPU both bench
# and run work on the CPU, e.g. `bash bench/gpu.sh run --profile smoke` (the tests do).
# The GPU machine needs torch, einops, opencv, pandas, scikit-learn, scikit-image and tqdm;
# facenet-pytorch is not needed there because the landmarks come from the carried cache.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR="${GPU_DIR:-.gpu}"
OUT="${OUT:-gpu-out}"
PY="${PYTHON:-python3}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

setup_env() {  # the release and landmarks of $GPU_DIR, the package from this checkout
  mkdir -p "$OUT"
  export HTNET_CACHE="$GPU_DIR/cache" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
}

machine() {  # one line per fact about the machine, for the log
  echo "start $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)")'
}

case "${1:-}" in
  prepare)
    : "${HTNET_DATA:?set HTNET_DATA to the release folder}"
    mkdir -p "$GPU_DIR/cache"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf "$GPU_DIR/data" && cp -r "$HTNET_DATA" "$GPU_DIR/data" && chmod -R u+w "$GPU_DIR/data"
    HTNET_CACHE="$GPU_DIR/cache" .venv/bin/python -c "
from htnetlib.data import load_composite
from htnetlib.data.regions import find_landmarks
d = load_composite('$GPU_DIR/data')
for mode in ('official', 'corrected'):
    print(mode, int((~find_landmarks(d, mode).found).sum()), 'apex images without a face')"
    du -sh "$GPU_DIR"
    ;;
  bench)
    shift
    setup_env
    { machine; "$PY" bench/train_benchmark.py --gpu --data "$GPU_DIR/data" \
        --json "$OUT/bench.json" "$@"; } 2>&1 | tee "$OUT/bench.log"
    ;;
  run)
    shift
    setup_env
    limit="${GPU_TIME_LIMIT:-540}"
    mkdir -p "$GPU_DIR/runs"
    stamp="$(mktemp)" rcfile="$(mktemp)"
    trap 'rm -f "$stamp" "$rcfile"' EXIT
    echo 1 > "$rcfile"  # until the trainer says otherwise
    {
      machine
      start=$(date +%s)
      rc=0
      timeout --kill-after=30 "$limit" "$PY" -m htnetlib.cli train --profile paper \
        --trainer grouped --threads 0 --data "$GPU_DIR/data" --out "$GPU_DIR/runs" "$@" || rc=$?
      echo "$rc" > "$rcfile"
      echo "wall_seconds $(( $(date +%s) - start ))"
      if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "cut off after $limit s: the folds finished so far are packed; unpack the archive" \
             "with 'bash bench/gpu.sh resume FILE' and run again to continue"
      fi
      echo "end $(date -u +%FT%TZ)"
    } 2>&1 | tee "$OUT/run.log" || true
    # pack every run folder this call wrote into (resumed or new), without temporary files
    find "$GPU_DIR/runs" -mindepth 1 -maxdepth 1 -type d -newer "$stamp" | while read -r dir; do
      id="$(basename "$dir")"
      tar czf "$OUT/run-$id.tar.gz" -C "$GPU_DIR/runs" --exclude='.*' "$id"
      echo "packed $OUT/run-$id.tar.gz" | tee -a "$OUT/run.log"
    done
    rc="$(cat "$rcfile")"
    case "$rc" in 0) ;; 124|137) exit 3 ;; *) exit "$rc" ;; esac
    ;;
  resume)
    shift
    [ $# -ge 1 ] || { usage; exit 2; }
    mkdir -p "$GPU_DIR/runs"
    for archive in "$@"; do
      tar xzf "$archive" -C "$GPU_DIR/runs"
      echo "unpacked $archive into $GPU_DIR/runs/"
    done
    ;;
  *)
    usage; exit 2 ;;
esac
