#!/usr/bin/env bash
# Creates .venv-bench with the pack's requirements plus the two baseline libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
. .venv-bench/bin/activate
echo "torch==2.13.0" > /tmp/torch-constraint.txt
pip install -q -c /tmp/torch-constraint.txt torch==2.13.0 -r requirements.txt -r benchmarks/requirements.txt
pip uninstall -y -q torchvision || true
echo "ready: . .venv-bench/bin/activate && python benchmarks/unet_speed.py"
