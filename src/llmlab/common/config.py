"""Recipe arguments: one dataclass per recipe, the same for the CLI and for Python.

Each field carries its help string in `metadata["help"]`. The CLI builds its
flags from the fields; `--config FILE` (TOML or JSON) sets fields too, flags
given on the command line win, and unknown keys are errors, never ignored.
Field metadata may also say `positional=True` or `short="-o"`.
"""

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from llmlab.common.errors import UserError

T = TypeVar("T")


def arg(default: Any, help: str, **metadata: Any) -> Any:
    """A recipe field with its CLI help: `lr: float = arg(3e-3, "peak learning rate")`.

    List defaults are copied per instance; `dataclasses.MISSING` makes the field required; extra metadata
    (positional, short, choices) passes through.
    """
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"help": help, **metadata})
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of `cls`. Defaults are suppressed so we can tell what was given."""
    hints = typing.get_type_hints(cls)
    own = set(cls.__dict__.get("__annotations__", {}))  # the recipe's own fields first, shared groups after
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        tp, _ = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if default not in (None, [], ""):
            help_text += f" (default: {default})"
        # argparse %-formats help strings: a literal % ("wanda-50%", "80%") must be doubled
        kwargs: dict[str, Any] = {"help": help_text.replace("%", "%%"), "default": argparse.SUPPRESS}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        names = ["--" + f.name.replace("_", "-")]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            kwargs.update(type=item, nargs="+", action="extend")
        else:
            kwargs["type"] = tp
        if f.metadata.get("positional"):
            kwargs.pop("default")
            is_required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
            kwargs["nargs"] = ("+" if is_required else "*") if typing.get_origin(tp) is list else None
            if kwargs["nargs"] is None:
                kwargs.pop("nargs")
            kwargs.pop("action", None)
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
        else:
            parser.add_argument(*names, **kwargs)
    parser.add_argument("--config", help="TOML or JSON file of field values; flags given here override it")


def load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except ModuleNotFoundError:
        raise UserError(f"--config {path}: TOML needs Python 3.11+; use a .json file") from None
    except Exception as e:
        raise UserError(f"--config {path}: cannot parse ({e})") from None


def build(cls: type[T], values: dict[str, Any], source: str = "arguments") -> T:
    """Make `cls(**values)`, turning unknown or missing fields into a UserError naming `source`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"{source}: {e}") from None


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    given = {k: v for k, v in vars(ns).items() if not k.startswith("_") and k != "config"}
    values: dict[str, Any] = {}
    if getattr(ns, "config", None):
        values.update(load_config_file(ns.config))
        values = {k.replace("-", "_"): v for k, v in values.items()}
        build(cls, {**values, **given}, source=f"--config {ns.config}")
    values.update(given)
    return build(cls, values)
