"""Options declared once: a dataclass field plus metadata, and everything else generated from it.

    @dataclass
    class Settings:
        steps: int = option(50, "denoising steps", minimum=1)
        scheduler: str | None = option(None, "sampler (default: the checkpoint's own)", type=str,
                                       choices=SCHEDULER_NAMES)

From that one declaration come:
  - the argparse flag (`add_flags`): `--steps`, help with the default, choices, bools as `--x` / `--no-x`;
  - validation (`build` / `validate`): type, choices and range, refused in one line naming the flag;
  - the values that change outputs (`output_values`): config.toml [outputs] / config.json and resume's comparison;
  - the keys a study file accepts (`build` refuses unknown keys, naming them).

A model's cross-option rules (e.g. steps x strength >= 1) stay in its own `check`.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UserError

_KEY = "diffinpaint.option"
NOT_RECORDED = object()  # `absent` default: a config saved before the option existed says nothing about it


@dataclass(frozen=True)
class Option:
    name: str  # field name (= study-file key, config key)
    flag: str  # command-line flag, e.g. --repaint-steps (for a bool defaulting True: the --no-... flag)
    help: str
    type: type  # int, float, str or bool (the value's type when set; None is allowed only as the default)
    default: Any
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # strictly greater than
    outputs: bool = True  # changes what the model produces: recorded in [outputs], compared on resume
    metavar: str | None = None
    # the value a run folder saved before this option existed was made with (compared on --resume); NOT_RECORDED:
    # such a folder is not compared for it
    absent: Any = NOT_RECORDED


def option(default: Any, help: str, *, flag: str | None = None, type: type | None = None,
           choices: tuple | list | None = None, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, outputs: bool = True, metavar: str | None = None,
           absent: Any = NOT_RECORDED) -> Any:
    """A dataclass field carrying its option metadata. `type` is needed only when the default is None. An option
    added after run folders already exist names, in `absent`, the behaviour those folders were made with (e.g. a
    new augmentation: "none"), so resuming one with the new default is refused rather than silently changed."""
    kind = type if type is not None else builtin_type(default)
    meta = {"flag": flag, "help": help, "type": kind, "choices": tuple(choices) if choices is not None else None,
            "minimum": minimum, "maximum": maximum, "above": above, "outputs": outputs, "metavar": metavar,
            "absent": absent}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def builtin_type(value: Any) -> type:
    for kind in (bool, int, float, str):  # bool before int: True is an int too
        if isinstance(value, kind):
            return kind
    raise TypeError(f"option default {value!r}: pass type= (int, float, str or bool)")


def declared(cls: type) -> list[Option]:
    """The options of a settings dataclass, in field order (fields without option metadata are not options)."""
    result = []
    for field in dataclasses.fields(cls):
        meta = field.metadata.get(_KEY)
        if meta is None:
            continue
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        if meta["type"] is bool and field.default is True and not meta["flag"]:
            flag = "--no-" + field.name.replace("_", "-")
        result.append(Option(name=field.name, flag=flag, help=meta["help"], type=meta["type"], default=field.default,
                             choices=meta["choices"], minimum=meta["minimum"], maximum=meta["maximum"],
                             above=meta["above"], outputs=meta["outputs"], metavar=meta["metavar"],
                             absent=meta["absent"]))
    return result


def by_name(cls: type) -> dict[str, Option]:
    return {o.name: o for o in declared(cls)}


# ------------------------------------------------------------------------------------------------ argparse


def _default_text(o: Option, default: Any) -> str:
    if o.type is bool:
        return ""
    return f" (default {default:g})" if isinstance(default, float) else \
        (f" (default {default})" if default not in (None, "") else "")


def add_flags(group, cls: type, dest_prefix: str = "", defaults: Mapping[str, Any] | None = None) -> None:
    """One flag per option. dest = dest_prefix + field name; default argparse.SUPPRESS, so the namespace holds only
    what the user typed (`given`), and the dataclass keeps the one default."""
    defaults = defaults or {}
    for o in declared(cls):
        default = defaults.get(o.name, o.default)
        kwargs: dict[str, Any] = {"dest": dest_prefix + o.name, "default": argparse.SUPPRESS}
        if o.type is bool:
            kwargs["action"] = "store_false" if o.flag.startswith("--no-") else "store_true"
        else:
            kwargs["type"] = o.type
            if o.choices:
                kwargs["choices"] = o.choices
            if o.metavar:
                kwargs["metavar"] = o.metavar
        group.add_argument(o.flag, help=o.help + _default_text(o, default), **kwargs)


def given(namespace: argparse.Namespace | Mapping[str, Any], dest_prefix: str = "") -> dict[str, Any]:
    """The options the user typed under `dest_prefix` (field name -> value)."""
    values = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    return {k[len(dest_prefix):]: v for k, v in values.items() if k.startswith(dest_prefix)}


# ------------------------------------------------------------------------------------------------ values


def check_value(o: Option, value: Any, where: str = "") -> Any:
    """The value, coerced where lossless (an int for a float option); UserError naming the flag otherwise."""
    label = f"{where}: {o.name}" if where else o.flag  # the flag on the command line, the key in a study file
    if value is None:
        if o.default is None:
            return None
        raise UserError(f"{label} needs a value (default {o.default!r})")
    if o.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, o.type) or (o.type is int and isinstance(value, bool)):
        raise UserError(f"{label} {value!r}: must be {'a whole number' if o.type is int else o.type.__name__}")
    if o.choices is not None and value not in o.choices:
        raise UserError(f"{label} {value}: choose from {', '.join(map(str, o.choices))}")
    if o.minimum is not None and value < o.minimum:
        raise UserError(f"{label} {value}: must be at least {o.minimum:g}")
    if o.maximum is not None and value > o.maximum:
        raise UserError(f"{label} {value}: must be at most {o.maximum:g}")
    if o.above is not None and not value > o.above:
        raise UserError(f"{label} {value}: must be greater than {o.above:g}")
    return value


def build(cls: type, values: Mapping[str, Any], *, where: str = "", base: Any = None) -> Any:
    """An instance of `cls` from `values` (field name -> value), on top of `base` (default: the declared
    defaults). Unknown keys and bad values are refused in one line; `where` names the source (a study-file table)
    and switches messages from flags to keys."""
    options = by_name(cls)
    unknown = sorted(set(values) - set(options))
    if unknown:
        source = where or "options"
        raise UserError(f"{source}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                        f"known: {', '.join(options) or 'none'}")
    checked = {k: check_value(options[k], v, where) for k, v in values.items()}
    instance = dataclasses.replace(base, **checked) if base is not None else cls(**checked)
    return instance


def validate(instance: Any) -> None:
    """Type, choices and range of every option of a settings instance (e.g. one built in Python)."""
    for o in declared(type(instance)):
        check_value(o, getattr(instance, o.name))


def output_values(instance: Any) -> dict[str, Any]:
    """The options that change outputs, name -> value (None kept; config.toml writes it as "none")."""
    return {o.name: getattr(instance, o.name) for o in declared(type(instance)) if o.outputs}


def as_dict(instance: Any) -> dict[str, Any]:
    """Every option, name -> value (config.json of a training run)."""
    return {o.name: getattr(instance, o.name) for o in declared(type(instance))}
