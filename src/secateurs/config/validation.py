"""Validation of pydantic configs into one-line `ConfigError` messages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from secateurs.errors import ConfigError


def format_validation_error(error: ValidationError) -> str:
    """One line naming the first offending key and what was wrong with it."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    if first["type"] == "missing":
        return f"missing required key {location!r}"
    message = str(first["msg"]).removeprefix("Value error, ")
    if not location:  # a check across several keys: the message names them; the input is the whole file
        return message
    return f"{location}: {message}" if "got" in message else f"{location}: {message} (got {first.get('input')!r})"


def validate(model: type[BaseModel], tree: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(f"{what}: {format_validation_error(error)}") from None
