#!/usr/bin/env bash
# N JAX processes on this machine (CPU: gloo collectives), coordinator on a free local port.
#   bash launch/local_multiprocess.sh N --config=configs/demo.py --workdir=runs/demoN [overrides...]
# Each process gets its share of the CPU devices; logs of process i go to WORKDIR.proc<i>.log.
set -euo pipefail
N="$1"; shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
WORKDIR="$(printf '%s\n' "$@" | sed -n 's/^--workdir=//p' | tail -n1)"
pids=()
for ((i = 0; i < N; i++)); do
  GESTURE_JAX_COORDINATOR="127.0.0.1:$PORT" GESTURE_JAX_NUM_PROCESSES="$N" GESTURE_JAX_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu "$PYTHON" -m gesture_jax.train "$@" > "${WORKDIR:-run}.proc$i.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
