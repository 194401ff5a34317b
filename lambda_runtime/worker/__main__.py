"""``python -m lambda_runtime.worker``: the buildspec command."""

from __future__ import annotations

from lambda_runtime.worker.entrypoint import main

if __name__ == "__main__":
    raise SystemExit(main())
