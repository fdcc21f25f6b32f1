"""Typed configs: a command's config is a dataclass of parts, each part a dataclass of options whose fields carry
a help string. The options stay flat for users: one flag and one YAML key per option, whichever part holds it
(`--learning-rate`, `learning_rate:`), so option names are unique within a command. Precedence: field default <
YAML file (`--config`) < command-line flag."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from frugalign.errors import UserError

C = TypeVar("C", bound="Config")


def option(default: Any, help: str, **kwargs) -> Any:
    """An option of a part, with its help string (lists and dicts get a fresh default per instance)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def part(cls: type, help: dict[str, str] | None = None, **defaults) -> Any:
    """A command config's field holding a part `cls`. `defaults` and `help` restate some of its options for this
    command: RewardConfig's learning rate, AIHF's RLOO options that apply to its explicit variant only."""
    return dataclasses.field(default_factory=functools.partial(cls, **defaults), metadata={"help": help or {}})


@dataclasses.dataclass
class Options:
    """A part of a command's config: options that belong together, and `validate`, which checks their values."""

    def validate(self) -> None:
        pass


@dataclasses.dataclass
class Config:
    """A command's config: its parts as fields (see `part`). `validate` checks each part, then the rules that tie
    options of several parts together (a subclass's `validate` adds those)."""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()


def options(cls: type[Config]) -> dict[str, tuple[dataclasses.Field, dataclasses.Field, Any]]:
    """The options of a command's config, in the order of its parts: name -> (the part's field in `cls`, the
    option's field in the part, the option's type)."""
    found: dict[str, tuple[dataclasses.Field, dataclasses.Field, Any]] = {}
    parts = typing.get_type_hints(cls)
    for p in dataclasses.fields(cls):
        hints = typing.get_type_hints(parts[p.name])
        for f in dataclasses.fields(parts[p.name]):
            if f.name in found:  # a flag and a YAML key name one option
                raise TypeError(f"{cls.__name__}: option {f.name} is in parts {found[f.name][0].name} and {p.name}")
            found[f.name] = (p, f, hints[f.name])
    return found


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check a YAML value against the field type, converting ints to floats where a float is wanted."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: must not be empty")
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(item, v, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads 5e-7 as a string (YAML 1.1 wants 5.0e-7)
            return float(value)
        except ValueError:
            pass
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise UserError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """One flag per option: `--learning-rate 1e-5`, `--gradient-checkpointing/--no-gradient-checkpointing`.
    Defaults are suppressed so that only the flags a user typed override the YAML file."""
    parser.add_argument("--config", type=str, default=None, help="YAML file of options (flags override it)")
    defaults = to_dict(cls())
    for name, (p, f, tp) in options(cls).items():
        tp, _ = _unwrap_optional(tp)
        # argparse formats help strings with %: a literal one ("95%") must be doubled
        help_text = p.metadata["help"].get(name, f.metadata["help"]).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{help_text} (default: {defaults[name]})"}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = typing.get_args(tp)
        elif origin is list:
            kwargs["nargs"] = "*"
            kwargs["type"] = typing.get_args(tp)[0]
        else:
            kwargs["type"] = tp
        parser.add_argument(_flag(name), **kwargs)


def load_config(cls: type[C], args: argparse.Namespace | None = None, yaml_path: str | None = None, **overrides) -> C:
    """Build a command's config: its defaults, then the YAML file, then parsed flags, then keyword overrides, all
    of them flat (`learning_rate=1e-5`: the part that holds an option is found by its name)."""
    values: dict[str, Any] = {}
    known = options(cls)
    if yaml_path is None and args is not None:
        yaml_path = args.config
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise UserError(f"{yaml_path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{yaml_path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{yaml_path}: expected a mapping of option: value")
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise UserError(f"{yaml_path}: unknown option '{key}' (known: {', '.join(sorted(known))})")
            values[name] = _coerce(known[name][2], value, f"{yaml_path}: option '{key}'")
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if k in known})
    for key, value in overrides.items():
        if key not in known:
            raise UserError(f"unknown option '{key}'")
        values[key] = value
    parts: dict[str, dict[str, Any]] = {p.name: {} for p in dataclasses.fields(cls)}
    for name, value in values.items():
        parts[known[name][0].name][name] = value
    # each part starts from the command's default of it (a part default such as RewardConfig's learning rate)
    config = cls(**{p.name: dataclasses.replace(p.default_factory(), **parts[p.name])  # type: ignore[misc]
                    for p in dataclasses.fields(cls)})
    config.validate()
    return config


def to_dict(config: Config) -> dict:
    """The options of a command's config, flat, as a YAML file (`--config`) gives them."""
    return {name: value for values in dataclasses.asdict(config).values() for name, value in values.items()}
