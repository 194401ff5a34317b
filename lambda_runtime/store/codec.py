"""DynamoDB attribute-value conversion with numbers kept as numbers (ints stay ints)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_ser = TypeSerializer()
_de = TypeDeserializer()


def _to_ddb(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_ddb(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_ddb(v) for v in value]
    return value


def _from_ddb(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_ddb(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_ddb(v) for v in value]
    return value


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(_to_ddb(v)) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_ddb(_de.deserialize(v)) for k, v in item.items()}


def value(v: Any) -> Any:
    return _ser.serialize(_to_ddb(v))


def update_expression(
    set_fields: dict[str, Any], remove: tuple[str, ...] = ()
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """SET/REMOVE expression with placeholder names for every attribute (reserved words are many)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets = []
    for i, (k, v) in enumerate(set_fields.items()):
        names[f"#s{i}"] = k
        values[f":s{i}"] = value(v)
        sets.append(f"#s{i} = :s{i}")
    expr = "SET " + ", ".join(sets) if sets else ""
    if remove:
        rems = []
        for i, k in enumerate(remove):
            names[f"#r{i}"] = k
            rems.append(f"#r{i}")
        expr += (" " if expr else "") + "REMOVE " + ", ".join(rems)
    return expr, names, values
