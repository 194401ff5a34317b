"""The one YAML reader: safe tags, no aliases, and errors that say where."""

from __future__ import annotations

import pytest
import yaml

from lambda_runtime.job import yaml_text


def test_a_plain_document_loads() -> None:
    assert yaml_text.load("orders:\n  - {name: a, cmds: [true]}\n") == {"orders": [{"name": "a", "cmds": [True]}]}


def test_aliases_are_refused_before_anything_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(9))}]\n" for i in range(8))
    with pytest.raises(yaml.YAMLError) as err:
        yaml_text.load(bomb)
    assert yaml_text.describe(err.value) == "YAML aliases are not accepted (line 2, column 8)"


def test_unsafe_tags_are_refused() -> None:
    with pytest.raises(yaml.YAMLError):
        yaml_text.load("x: !!python/object/apply:os.system [echo hi]\n")


def test_a_syntax_error_names_line_and_column() -> None:
    with pytest.raises(yaml.YAMLError) as err:
        yaml_text.load("orders:\n  - name: a\n   cmds: [x\n")
    assert "(line 3, column" in yaml_text.describe(err.value)


def test_a_key_given_twice_is_refused_with_its_position() -> None:
    with pytest.raises(yaml.YAMLError) as exc:
        yaml_text.load("orders: [a]\nname: x\norders: [b]\n")
    assert yaml_text.describe(exc.value) == "duplicate key 'orders' (line 3, column 1)"
    with pytest.raises(yaml.YAMLError):
        yaml_text.load("orders:\n  - name: a\n    cmds: [x]\n    cmds: [y]\n")
