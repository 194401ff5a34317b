"""The ``iac-ci`` command line."""

from lambda_runtime.cli.main import main

__all__ = ["main"]
