"""The answer of an intake route: an HTTP status and a JSON body.

A leaf module (no imports of ours) so the GitHub webhook route, which lives with the rest of
GitHub in ``lambda_runtime.github``, answers in the same type without importing intake's logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Mapping[str, Any]
