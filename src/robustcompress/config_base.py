"""Base for every serialisable config: pydantic, unknown keys refused, errors that name the key."""

from __future__ import annotations

import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from robustcompress.errors import ConfigError


class StrictConfig(BaseModel):
    """A config dataclass: refuses unknown keys, validates types and ranges on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
    # Fields added after results were cached whose defaults keep the earlier behaviour: left out of
    # cache keys while at their defaults, so adding an option does not invalidate finished work.
    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ()

    def key_dict(self) -> dict[str, Any]:
        """The fields that identify this config's result in a cache (see KEY_OMITS_DEFAULT)."""
        data = self.model_dump()
        for name in self.KEY_OMITS_DEFAULT:
            if data[name] == type(self).model_fields[name].get_default(call_default_factory=True):
                del data[name]
        return data

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "") -> StrictConfig:
        """Validate `data`; raise a ConfigError naming each bad key (prefixed by `where`)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, cls, where)) from None


def describe_validation_error(exc: ValidationError, cls: type[BaseModel], where: str = "") -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        full = f"{where}.{key}" if where and key else (where or key)
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_model_at(cls, err["loc"][:-1]).model_fields))
            lines.append(f"unknown key '{full}'; allowed keys: {allowed}")
        else:
            lines.append(f"'{full}': {err['msg']} (got {err.get('input')!r})")
    return "invalid config: " + "; ".join(lines)


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The nested config class that a validation error's location points into."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        annotation = field.annotation if field else None
        candidates = [annotation, *typing.get_args(annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        cls = nested[0]
    return cls
