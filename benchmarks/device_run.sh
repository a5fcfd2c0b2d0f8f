#!/usr/bin/env bash
# The one prepared command for a session lent a GPU (benchmarks/DEVICE.md):
#
#   bash benchmarks/device_run.sh --minutes 7.5                          # run: carry [".device"]
#   bash benchmarks/device_run.sh --stages train_priors --train-minutes 2  # the separate training call
#   bash benchmarks/device_run.sh --smoke --out DIR                        # on a CPU: no unpacking
#
# Unpacks .device/site-cp312.tar.xz (made here by benchmarks/device_pack.sh: astra-toolbox,
# hydra, nibabel, sigpy, ... that the GPU image lacks) into $DEVICE_SITE (default /tmp/site), puts
# it and the repository on PYTHONPATH and hands every argument to benchmarks/device_run.py, which
# writes device_run.json and device_run.log into $OUT (or --out).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
smoke=0
for arg in "$@"; do [[ "$arg" == --smoke || "$arg" == --dry-run ]] && smoke=1; done

if (( smoke )); then
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  export DEVICE_SITE=${DEVICE_SITE:-/tmp/site}
  ARCHIVE="$REPO/.device/site-cp312.tar.xz"
  if [[ -f "$ARCHIVE" ]]; then
    start=$(date +%s.%N)
    if [[ -d "$DEVICE_SITE" && ! -f "$DEVICE_SITE/DEVICE_PACK.txt" && -n "$(ls -A "$DEVICE_SITE")" ]]; then
      DEVICE_SITE=$(mktemp -d "${DEVICE_SITE%/}.XXXXXX")  # someone else's folder: leave it alone
    fi
    rm -rf "$DEVICE_SITE" && mkdir -p "$DEVICE_SITE"
    if command -v xz >/dev/null 2>&1; then
      tar -C "$DEVICE_SITE" -xJf "$ARCHIVE"
    else
      "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$ARCHIVE" "$DEVICE_SITE"
    fi
    status=$?
    seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if (( status == 0 )); then
      export DEVICE_RUN_UNPACK="$ARCHIVE ($(du -k "$ARCHIVE" | cut -f1) KiB) -> $DEVICE_SITE in $seconds s"
    else
      export DEVICE_RUN_UNPACK="FAILED to unpack $ARCHIVE (status $status)"
    fi
    export PYTHONPATH="$DEVICE_SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  else
    export DEVICE_RUN_UNPACK="MISSING $ARCHIVE: run bash benchmarks/device_pack.sh where pip works and carry .device"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "device_run.sh: ${DEVICE_RUN_UNPACK}"
fi

exec "$PYTHON" "$REPO/benchmarks/device_run.py" "$@"
