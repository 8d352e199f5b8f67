# Sourced by scripts/bench and scripts/test: make (once) and enter the project's venv.
# The editable install is in compat mode (a path in a .pth file): the default mode's
# import hook costs every interpreter about 10 ms, and every worker and exec'd
# server is a fresh interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/_env.sh" | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
  PY="${PYTHON:-python3}"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || { echo "ipcbench: needs Python >= 3.11 as ${PY} (set PYTHON=...)" >&2; exit 2; }
  echo "ipcbench: setting up $VENV (first use, about a minute) ..." >&2
  LOG="$(mktemp)"
  if ! { [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"; } >"$LOG" 2>&1 \
     || ! "$VENV/bin/python" -m pip install --upgrade pip >>"$LOG" 2>&1 \
     || ! "$VENV/bin/python" -m pip install -e "$ROOT[test]" \
          --config-settings editable_mode=compat >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "ipcbench: setting up $VENV failed (full log: $LOG)" >&2
    exit 2
  fi
  rm -f "$LOG" "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
