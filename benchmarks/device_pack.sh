#!/usr/bin/env bash
# Build .device/site-cp312.tar.xz: the Python packages the GPU machine's image lacks, for its
# CPython 3.12 on x86-64 Linux, as one small archive that travels with the working tree
# (`run` with carry [".device"]; benchmarks/device_run.sh unpacks it there). See benchmarks/DEVICE.md.
#
#   bash benchmarks/device_pack.sh            # here (needs PyPI, gcc, xz); idempotent
#
# What goes in (pinned; the image already has numpy, scipy, torch, h5py, safetensors, tqdm,
# matplotlib, pyyaml, packaging, typing-extensions, numba, threadpoolctl):
#   astra-toolbox (libastra.so.0 with its debug info stripped), libcudart.so.12 alone from
#   nvidia-cuda-runtime-cu12, a stub libcufft.so.11 compiled from benchmarks/device/cufft_stub.c
#   (the real cuFFT 11 wheel is ~200 MB: astra's FFT-based CUDA FBP/FDK then fail, its
#   projectors work), hydra-core, omegaconf, antlr4-python3-runtime (built from its sdist),
#   nibabel, pydicom, finufft (NonCartesianMRI's NUFFT on the CPU; the 114 MB cufinufft wheel does
#   not fit, so CUDA tensors take a CPU round trip), sigpy, PyWavelets, and nilearn for the MNI152 template (T1, grey and white matter) that
#   data_scripts/make_mri_training_set.py reads (device_run.py's train_priors stage; the image has
#   its scikit-learn, pandas, joblib); tests, test data, headers, static libraries, console
#   scripts, nilearn's plotting assets and its data other than the T1 template, and __pycache__ pruned.
#
# Downloads are cached outside the repo (DEVICE_PACK_CACHE, default ~/.cache/recon-device-pack)
# so that .device holds the archive alone. With a python3.12 here (PATH or pyenv) the unpacked
# archive is also imported by it, next to numpy/scipy/pyyaml/packaging installed into the cache.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR="$REPO/.device"
ARCHIVE="$OUT_DIR/site-cp312.tar.xz"
CACHE="${DEVICE_PACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-device-pack}"
WHEELS="$CACHE/wheels"
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
LIMIT_MIB=25

PINS=(
  astra-toolbox==2.5.0
  nvidia-cuda-runtime-cu12==12.9.79
  hydra-core==1.3.8
  omegaconf==2.3.1
  nibabel==5.4.2
  pydicom==3.0.2
  finufft==2.5.1
  sigpy==0.1.27
  PyWavelets==1.9.0
  nilearn==0.14.1
)
ANTLR=antlr4-python3-runtime==4.9.3
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any --only-binary=:all:)

say() { printf 'device_pack: %s\n' "$*"; }

mkdir -p "$WHEELS" "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_pack.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SITE="$WORK/site"

# 1. Wheels (cached: pip download skips what is there).
say "wheels for CPython 3.12 manylinux x86_64 -> $WHEELS"
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$WHEELS" "${PINS[@]}" 2>&1 \
  | grep -v "is ignored: it is neither" || true
if ! ls "$WHEELS"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  say "building $ANTLR from its sdist (no wheel on PyPI)"
  "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$WHEELS" "$ANTLR" 2>&1 \
    | grep -v "is ignored: it is neither" || true
fi
wheels=()
for pin in "${PINS[@]}" "$ANTLR"; do
  name=${pin%%==*}; version=${pin#*==}
  stem=$(echo "$name" | tr 'A-Z-' 'a-z_')
  match=$(ls "$WHEELS" | awk -v s="$stem-$version-" 'tolower($0) ~ "^"s && /\.whl$/' | head -1)
  [[ -n "$match" ]] || { say "no wheel for $pin in $WHEELS"; exit 1; }
  wheels+=("$WHEELS/$match")
done

# 2. One site dir.
"$PY" -m pip install -q --no-deps --no-compile --no-index "${TARGET[@]}" \
  --target "$SITE" "${wheels[@]}"

# 3. Prune.
rm -rf "$SITE/bin"
rm -rf "$SITE"/nvidia/cuda_runtime/include
find "$SITE/nvidia/cuda_runtime/lib" -mindepth 1 ! -name libcudart.so.12 -delete
find "$SITE/nvidia" -name __init__.py -delete   # a namespace portion: never shadows the image's own nvidia package
rm -rf "$SITE"/nvidia_cuda_runtime_cu12-*.dist-info  # its files are pruned; astra finds the library by RUNPATH
rm -rf "$SITE/pywt/tests" "$SITE/pydicom/data/test_files"
find "$SITE/nibabel" "$SITE/nilearn" -type d -name tests -prune -exec rm -rf {} +
# the T1, grey- and white-matter maps stay: the anatomical CT phantoms (recon.data.anatomy) use all three
rm -rf "$SITE/nilearn/_assets" "$SITE"/nilearn/datasets/data/{fsaverage5,image_10426.nii.gz,test.mgz,mmap.dat}
find "$SITE" -type d -name __pycache__ -prune -exec rm -rf {} +
find "$SITE/astra" "$SITE/pywt" -name '*.so*' -exec strip --strip-debug {} +

# 4. The cuFFT 11 stub where libastra.so.0's RUNPATH ($ORIGIN/../nvidia/cufft/lib) finds it.
mkdir -p "$SITE/nvidia/cufft/lib"
gcc -shared -fPIC -O2 -Wall -Wextra -Wl,-soname,libcufft.so.11 \
  -Wl,--version-script="$REPO/benchmarks/device/cufft_stub.map" \
  -o "$SITE/nvidia/cufft/lib/libcufft.so.11" "$REPO/benchmarks/device/cufft_stub.c"

# 5. Check the libraries resolve: every NEEDED found, every cufft symbol at version libcufft.so.11.
LIBASTRA="$SITE/astra/libastra.so.0"
if ldd "$LIBASTRA" | grep -q "not found"; then ldd "$LIBASTRA"; say "libastra.so.0 has unresolved libraries"; exit 1; fi
ldd "$LIBASTRA" | grep -E "libcudart|libcufft" | sed 's/^/  /'
needed=$(nm -D --undefined-only "$LIBASTRA" | awk '/cufft/ {print $2}' | sort)
given=$(nm -D --defined-only "$SITE/nvidia/cufft/lib/libcufft.so.11" | awk '/cufft/ {sub("@@", "@", $3); print $3}' | sort)
missing=$(comm -23 <(echo "$needed") <(echo "$given"))
[[ -z "$missing" ]] || { say "the cuFFT stub lacks: $missing"; exit 1; }
say "stub libcufft.so.11 gives all $(echo "$needed" | wc -l) cufft symbols libastra.so.0 needs: $(echo $needed)"
if undefined=$(ldd -r "$LIBASTRA" 2>&1 | grep -E "undefined symbol: (cufft|cuda)"); [[ -n "$undefined" ]]; then
  echo "$undefined"; say "libastra.so.0 has undefined CUDA symbols"; exit 1
fi

# 6. Manifest inside the archive.
{
  echo "built by benchmarks/device_pack.sh on $(date -u +%Y-%m-%dT%H:%MZ) for CPython 3.12 manylinux x86_64"
  printf '%s\n' "${PINS[@]}" "$ANTLR" "libcufft.so.11: stub from benchmarks/device/cufft_stub.c (no cuFFT: astra FBP_CUDA/FDK_CUDA fail)"
} > "$SITE/DEVICE_PACK.txt"

# 7. Pack (atomically: a failed build leaves the previous archive).
say "packing $(du -sm "$SITE" | cut -f1) MiB unpacked (xz -9)"
tar -C "$SITE" --sort=name --owner=0 --group=0 --numeric-owner -cf - . | xz -9 -T1 > "$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"

# 8. Verify the archive: it unpacks, and (with a python3.12 here) every package imports.
CHECK="$WORK/check"
mkdir -p "$CHECK"
tar -C "$CHECK" -xJf "$ARCHIVE"
ldd "$CHECK/astra/libastra.so.0" | grep -q "not found" && { say "unpacked libastra.so.0 does not resolve"; exit 1; }
PY312=$( { for p in "$(command -v python3.12 2>/dev/null)" "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"; do
           [[ -n "$p" ]] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$p"; break; }; done; } || true)
if [[ -n "$PY312" ]]; then
  BASE="$CACHE/verify-cp312"
  if [[ ! -f "$BASE/.done" ]]; then
    say "installing numpy, scipy, pyyaml, packaging, typing-extensions, tqdm for $PY312 into $BASE (verification only)"
    "$PY" -m pip install -q --no-deps --no-compile "${TARGET[@]}" --target "$BASE" \
      numpy scipy pyyaml packaging typing-extensions tqdm 2>&1 | grep -v "is ignored: it is neither" || true
    touch "$BASE/.done"
  fi
  PYTHONPATH="$CHECK:$BASE" PYTHONNOUSERSITE=1 "$PY312" -I -c '
import sys
sys.path[:0] = sys.argv[1:3]
import numpy as np, astra, hydra, omegaconf, antlr4, nibabel, pydicom, pywt
vol = astra.create_vol_geom(16, 16)
proj = astra.create_proj_geom("parallel", 1.0, 24, np.linspace(0, np.pi, 8, endpoint=False))
pid = astra.create_projector("linear", proj, vol)
sid, sino = astra.create_sino(np.ones((16, 16), dtype=np.float32), pid)
assert sino.shape == (8, 24) and sino.max() > 10, sino.max()
astra.data2d.delete(sid); astra.projector.delete(pid)
pywt.wavedec2(np.ones((16, 16)), "db2", level=1)
t1 = nibabel.load(sys.argv[1] + "/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
assert t1.shape == (197, 233, 189), t1.shape
print("device_pack: python%d.%d imports astra %s (use_cuda=%s, projects on the CPU), hydra %s, omegaconf %s, "
      "nibabel %s, pydicom %s, pywt %s, reads the MNI152 T1 template; sigpy and nilearn not imported here (numba, scikit-learn)" % (sys.version_info[0], sys.version_info[1],
      astra.__version__, astra.use_cuda(), hydra.__version__, omegaconf.__version__, nibabel.__version__,
      pydicom.__version__, pywt.__version__))
' "$CHECK" "$BASE"
else
  say "no python3.12 here: imports not checked (libraries and symbols were)"
fi

size=$(stat -c %s "$ARCHIVE")
mib=$(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1048576}')
say "built $ARCHIVE: $mib MiB ($size bytes), $(tar -tJf "$ARCHIVE" | wc -l) entries"
if (( size > LIMIT_MIB * 1048576 )); then
  say "over the $LIMIT_MIB MiB share of the 64 MiB that travels: prune more"; exit 1
fi
