"""Base for every serialisable config: pydantic, unknown keys refused, errors that name the key."""

from __future__ import annotations

import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from robustcompress.errors import ConfigError


class StrictConfig(BaseModel):
    """A config dataclass: refuses unknown keys, validates types and ranges on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
    # Fields added after results were cached whose defaults keep the earlier behaviour: left out of
    # cache keys while at their defaults, so adding an option does not invalidate finished work.
    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ()
    # Fields renamed after results were cached: {field: its old name}. Configs may still use the old
    # names, and cache keys keep them, so a rename invalidates no finished work.
    OLD_NAMES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _read_old_names(cls, data: Any) -> Any:
        """A config using any old name that is no longer a field is read entirely in the old names.

        Old names that are fields again with a new meaning (qat's `batch_size`, once the calibration
        batch) are thus read the old way only beside other old names, as they were written.
        """
        if not cls.OLD_NAMES or not isinstance(data, dict):
            return data
        field_of = {old: new for new, old in cls.OLD_NAMES.items()}
        if not any(key in field_of and key not in cls.model_fields for key in data):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = field_of.get(key, key)
            if name in out:
                raise ValueError(f"'{name}' is given twice, also as its old name '{cls.OLD_NAMES[name]}'")
            out[name] = value
        return out

    def key_dict(self) -> dict[str, Any]:
        """The fields that identify this config's result in a cache (see KEY_OMITS_DEFAULT, OLD_NAMES)."""
        data = self.model_dump()
        for name in self.KEY_OMITS_DEFAULT:
            if data[name] == type(self).model_fields[name].get_default(call_default_factory=True):
                del data[name]
        return {self.OLD_NAMES.get(name, name): value for name, value in data.items()}

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
