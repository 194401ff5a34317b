"""The one structured logger of the runtime (powertools), shared by every module.

One instance rather than per-module child loggers, so keys appended for a run (run id,
order, trace id) appear on every line logged while handling it, whichever module logs. The
service name comes from ``POWERTOOLS_SERVICE_NAME``, which the construct sets per function.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "iac-ci"))
