#!/usr/bin/env bash
# Builds the demo application archive.
set -euo pipefail
out="$1"
tar -czf "$out" src
echo "built $out"
