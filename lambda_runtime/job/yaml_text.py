"""The one YAML reader for everything a user writes: job submissions, ``.iac-ci.yml`` and job files.

Safe tags only, no duplicate keys, booleans as YAML 1.2 spells them (``true``/``false``: ``on:``,
the trigger key, stays the string ``on``, and ``country: no`` stays ``no``), and no anchors or
aliases: a 27 KB document of nested aliases expands to more than a gigabyte in memory, so a small
body must stay a small document. An alias is refused with its line and column, like any other
YAML error.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class NoAliasSafeLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases, with YAML 1.2 booleans."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is an error, not last-wins: ``orders:`` written twice would silently
        drop the first list."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{str(key)[:100]}'",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads yes/no/on/off as booleans; keep only true/false (YAML 1.2's core schema)
NoAliasSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
NoAliasSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(text: str) -> Any:
    """Parse ``text``; raises ``yaml.YAMLError`` (aliases included), ``RecursionError`` for absurd
    nesting, or ``ValueError``/``TypeError``/``OverflowError`` for a value YAML cannot build."""
    return yaml.load(text, Loader=NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass


def describe(exc: yaml.YAMLError) -> str:
    """One line with the problem and where it is (``line L, column C``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
