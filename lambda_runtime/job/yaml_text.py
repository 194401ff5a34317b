"""The one YAML reader for everything a user writes: job submissions, ``.iac-ci.yml`` and job files.

Safe tags only, and no anchors or aliases: a 27 KB document of nested aliases expands to more
than a gigabyte in memory, so a small body must stay a small document. An alias is refused with
its line and column, like any other YAML error.
"""

from __future__ import annotations

from typing import Any

import yaml


class NoAliasSafeLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """Parse ``text``; raises ``yaml.YAMLError`` (aliases included), ``RecursionError`` for absurd
    nesting, or ``ValueError``/``TypeError``/``OverflowError`` for a value YAML cannot build."""
    return yaml.load(text, Loader=NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass


def describe(exc: yaml.YAMLError) -> str:
    """One line with the problem and where it is (``line L, column C``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
