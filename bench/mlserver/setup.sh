#!/usr/bin/env bash
# MLServer 1.7.1 in a venv of its own, for bench/batch_bench.py's third server.
#
# Never a dependency of the project: it lives under var/ (git-ignored), outside .venv, and
# only bench/batch_bench.py starts it. Packages come through pip's configured index, like
# the project's own. Idempotent: a venv that already has everything is left as it is.
#
#   bash bench/mlserver/setup.sh [VENV]      # default var/bench/mlserver-venv
set -euo pipefail

cd "$(dirname "$0")/../.."
VENV="${1:-var/bench/mlserver-venv}"
PYTHON="${PYTHON:-python3}"
MLSERVER_VERSION="1.7.1"

if [ -x "$VENV/bin/mlserver" ] && "$VENV/bin/python" - "$MLSERVER_VERSION" 2>/dev/null <<'EOF'
import sys
from importlib import metadata
import httptools, numpy, onnxruntime  # noqa: F401  (all importable, or reinstall)
uvloop = tuple(int(part) for part in metadata.version("uvloop").split(".")[:2])
sys.exit(metadata.version("mlserver") != sys.argv[1] or uvloop >= (0, 22))
EOF
then
    echo "MLServer $MLSERVER_VERSION already in $VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# The same onnxruntime and numpy lines as the project (pyproject.toml), so both servers run
# the same kernels; mlserver brings its own web stack (FastAPI, uvicorn with uvloop, pydantic).
# httptools is uvicorn's fast HTTP parser: mlserver does not require it, and without it
# uvicorn parses with h11, so it is added to give MLServer its fastest HTTP path.
# uvloop stays below 0.22, the release current when MLServer 1.7.1 came out: from 0.22 on
# its event-loop policy raises in asyncio.get_event_loop() where no loop is set, which is
# what MLServer's parallel workers call first ("no current event loop"), so they die.
"$VENV/bin/pip" install --quiet "mlserver==$MLSERVER_VERSION" "onnxruntime>=1.18" "numpy>=1.26" \
    httptools "uvloop<0.22"
"$VENV/bin/python" -c "import mlserver, onnxruntime; print('mlserver', mlserver.__version__, 'onnxruntime', onnxruntime.__version__)"
