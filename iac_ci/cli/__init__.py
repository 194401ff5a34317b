"""The ``iac-ci`` command line."""

from iac_ci.cli.main import main

__all__ = ["main"]
