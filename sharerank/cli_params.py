"""Parsers of the command line's structured options: pydantic checks each value and click reports a bad one as a
usage error naming the option (exit 2, one line), so no command splits or converts option text itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import Field, TypeAdapter, ValidationError


def comma_separated(item: Any, *, at_least_one: bool = True) -> Callable[[str | tuple], tuple]:
    """A parser of ``a,b,c`` into a tuple of ``item`` values (any pydantic type: ``PositiveInt``, a ``Literal``);
    blanks around commas are dropped."""
    adapter = TypeAdapter(Annotated[tuple[item, ...], Field(min_length=1 if at_least_one else 0)])

    def parse(value: str | tuple) -> tuple:
        if isinstance(value, tuple):  # click passes converted defaults through again
            return value
        items = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return adapter.validate_python(items)
        except ValidationError as exc:
            raise typer.BadParameter(f"{value!r}: {_first_error(exc)}") from None

    return parse


def assignment(value: str | tuple) -> tuple[str, str, Any]:
    """``MODEL.KEY=VALUE`` as ``(model, key, value)``; the value is JSON (``2048``, ``0.5``, ``true``), ``none``,
    or else the bare text."""
    if isinstance(value, tuple):
        return value
    target, equals, text = value.partition("=")
    model, dot, key = target.partition(".")
    if not (equals and dot and model and key and text):
        raise typer.BadParameter(f"{value!r}: expected MODEL.KEY=VALUE")
    return model, key, parse_setting(text)


def parse_setting(text: str) -> Any:
    """A setting's value from text: JSON, ``none`` (None), or else the text itself."""
    try:
        return None if text.lower() == "none" else json.loads(text)
    except json.JSONDecodeError:
        return text


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = f"item {error['loc'][0] + 1}: " if error["loc"] else ""
    return f"{where}{error['msg'][0].lower()}{error['msg'][1:]}"
