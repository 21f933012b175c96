#!/usr/bin/env bash
# One lent GPU window in one call (issue 19); see bench/gpu_window.py.
#   bench/gpu_window.sh pack                  # here: .gpu/ = wheels the device lacks (cp312) + ACDC slices preprocessed; prints MiB (< 48)
#   bench/gpu_window.sh device [--limit S]    # there (run tool, carry ['.gpu']): install from .gpu/, measure, plan, run, $OUT/gpu_window.tgz
#   bench/gpu_window.sh rehearse              # here: fresh venv with only the device's distributions, the pack, `device --toy`
#   bench/gpu_window.sh collect FILES_AT/gpu_window.tgz   # here: the archive's runs into results/ (no weights), then commit
set -euo pipefail
cd "$(dirname "$0")/.."
now() { python3 -c 'import time; print(time.time())'; }
case "${1:-}" in
  pack)
    shift
    grep -qx '.gpu/' .gitignore || echo '.gpu/' >> .gitignore
    python3 bench/gpu_window.py pack "$@";;
  device)
    shift
    T0=$(now); W=${GPU_WINDOW_WORK:-/tmp/gpu_window}; SITE=$W/site
    mkdir -p "$W"
    [ -f .gpu/requirements.txt ] || { echo "error: .gpu/requirements.txt missing: run 'bench/gpu_window.sh pack' here and carry ['.gpu']"; exit 2; }
    # only what this machine lacks, from the carried wheels; GPU_EXTRA_WHEELS: a second wheel folder (the rehearsal's cp311 builds)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --find-links .gpu/whl \
      ${GPU_EXTRA_WHEELS:+--find-links "$GPU_EXTRA_WHEELS"} -r .gpu/requirements.txt
    echo "install: $(python3 -c "import time; print(round(time.time() - $T0, 1))") s ($(wc -l < .gpu/requirements.txt) wheels into $SITE)" | tee "$W/install.txt"
    export PYTHONPATH="$SITE:$PWD" CARDIAC_NVAE_DATA="$PWD/.gpu/data" CARDIAC_NVAE_CACHE="$W/cache" PYTHONUNBUFFERED=1
    python3 bench/gpu_window.py device --t0 "$T0" --work "$W" --out "${OUT:-bench/out}" "$@";;
  rehearse)
    shift
    R=${GPU_REHEARSE_DIR:-/tmp/gpu_window_rehearse}; T0=$(now)
    [ -f .gpu/requirements.txt ] || bench/gpu_window.sh pack
    rm -rf "$R"; mkdir -p "$R"
    python3 -m venv "$R/venv"
    # the device's distributions only (its list, bench/device-python-packages.txt), linked from this machine's site-packages
    python3 bench/gpu_window.py device-site "$R/device-site"
    echo "$R/device-site" > "$(ls -d "$R"/venv/lib/python3*/site-packages)/device_site.pth"
    ! "$R/venv/bin/python" -c 'import fastai' 2>/dev/null || { echo "error: the rehearsal venv sees fastai before the pack is installed"; exit 1; }
    # the same requirements for this machine's python (the device's are cp312 builds)
    python3 bench/gpu_window.py pack --no-data --python "$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" --dest "$R/local"
    PATH="$R/venv/bin:$PATH" GPU_EXTRA_WHEELS="$R/local/whl" GPU_WINDOW_WORK="$R/work" OUT="$R/out" \
      timeout "${GPU_REHEARSE_LIMIT:-1500}" bench/gpu_window.sh device --toy --limit "${GPU_REHEARSE_WINDOW:-1200}" --results "$R/results" "$@"
    tar -tzf "$R/out/gpu_window.tgz" | grep -c 'record.json' | xargs echo "records in the archive:"
    echo "rehearsal: $(python3 -c "import time; print(round(time.time() - $T0))") s in all; pack $(du -sm .gpu | cut -f1) MiB";;
  collect)
    # here, after the device call: its runs (records, logs, figure arrays; never weights) into results/, the window's own files beside
    [ -f "${2:-}" ] || { echo "usage: $0 collect PATH/gpu_window.tgz"; exit 2; }
    D=$(mktemp -d); tar -xzf "$2" -C "$D"
    W=results/gpu-window-$(date -u +%Y%m%d-%H%M%S); mkdir -p "$W"
    cp "$D"/*.json "$D"/window.log "$W"/ 2>/dev/null || true
    for r in "$D"/runs/*/; do [ -f "$r/record.json" ] && cp -r "$r" results/; done
    ls -d results/*window* | tail -n 12; rm -rf "$D";;
  *) echo "usage: $0 pack | device [--limit S] | rehearse | collect ARCHIVE"; exit 2;;
esac
