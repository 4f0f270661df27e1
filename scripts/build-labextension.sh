#!/usr/bin/env bash
# Build fx's JupyterLab side panel (labextension/) as a prebuilt extension into
# fx_jupyter/labextension/ (shipped in the wheel as share/jupyter/labextensions/<name>), and link
# that output into the venv so the editable install's JupyterLab loads it.
#
# Needs the venv (jlpm and jupyter-builder come with jupyterlab) and Node.js >= 20.19 on PATH.
# Each step is skipped when its inputs are older than its output, so a second run takes
# well under a second. FORCE=1 rebuilds anyway.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
SRC=$ROOT/labextension
OUT=$ROOT/fx_jupyter/labextension
NAME=$(sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p' "$SRC/package.json" | head -n1)
export PATH="$VENV/bin:$PATH"

for tool in node jlpm jupyter-builder; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-labextension: '$tool' not found. Node.js comes from the system (Debian: apt-get install nodejs npm);" \
             "jlpm and jupyter-builder from the venv (make setup)." >&2
        exit 1
    fi
done

# newer_than TARGET PATH...: true when TARGET is missing or any file under PATH is newer.
newer_than() {
    local target=$1
    shift
    [[ ! -e $target ]] || [[ -n $(find "$@" -newer "$target" -print -quit) ]]
}

cd "$SRC"
state=node_modules/.yarn-install-state.gz
if [[ -n ${FORCE:-} ]] || newer_than "$state" package.json yarn.lock .yarnrc.yml; then
    echo "build-labextension: installing npm dependencies (jlpm install)"
    jlpm install
    touch "$state"
fi

if [[ -n ${FORCE:-} ]] || newer_than "$OUT/package.json" src style package.json tsconfig.json yarn.lock "$state"; then
    echo "build-labextension: building $NAME into ${OUT#"$ROOT"/}"
    rm -rf "$OUT" lib tsconfig.tsbuildinfo
    jlpm run build
    touch "$OUT/package.json"
fi

# The editable install copies the output it found at install time (or none); a symlink makes
# every later build visible to JupyterLab without reinstalling.
link="$VENV/share/jupyter/labextensions/$NAME"
if [[ $(readlink "$link" 2>/dev/null) != "$OUT" ]]; then
    mkdir -p "$(dirname "$link")"
    rm -rf "$link"
    ln -s "$OUT" "$link"
    echo "build-labextension: linked ${link#"$ROOT"/} -> ${OUT#"$ROOT"/}"
fi
