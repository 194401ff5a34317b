"""The ``iac-ci`` executable: for ``run``, the embedded AWS starts before the command line loads.

Loading the command line (boto3, pydantic, the engine) takes most of a second, and so does
starting the embedded AWS: side by side, a short job's wall time loses one of them. Nothing
else is decided here; the command line parses and validates everything as before, and a
server nobody claims ends with this process.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"] and not any(a in ("-h", "--help") or a.startswith("--endpoint-url") for a in args):
        from iac_ci.embedded.server import EmbeddedAws

        EmbeddedAws.prestart()
    from iac_ci.cli.main import main as command_line

    command_line()
