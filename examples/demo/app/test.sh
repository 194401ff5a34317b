#!/usr/bin/env bash
set -euo pipefail
for f in src/*.sh; do bash -n "$f" && echo "ok $f"; done
