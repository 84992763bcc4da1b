"""The options each selector accepts, read from its signature, and the check every ``tarot.select`` call goes through.

A selector's options are its keyword-only parameters (with their defaults and type hints) minus the ones
:func:`tarot.select` passes itself (``seed``, ``eps``, the Sinkhorn tolerances, ``progress``, ``target_groups``) and
callables for tests (``value_fn``). :func:`check_options` refuses a name the selector does not take, listing the valid
ones and the closest match, so a misspelt ``fil_rounds=3`` is an error instead of a silently ignored setting; values
written as text (from a YAML config or ``--set``) are converted to the hinted type, and a value of the wrong type is
refused with the option's name.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: options tarot.select passes to every selector itself (not settable per selector)
SHARED = ("seed", "eps", "ot_tol", "ot_value_tol", "progress", "target_groups")
_INTERNAL = ("value_fn",)


@dataclass(frozen=True)
class OptionSpec:
    """One selector option: its name, default and the plain types its hint admits (empty = not checked)."""

    name: str
    default: Any
    types: tuple[type, ...]
    optional: bool

    def describe(self) -> str:
        kinds = "/".join(t.__name__ for t in self.types) or "any"
        return f"{self.name} ({kinds}{' or null' if self.optional else ''}, default {self.default!r})"


def _plain_types(hint: Any) -> tuple[tuple[type, ...], bool]:
    """The builtin scalar types a hint admits and whether it admits None; anything else is not checked."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    plain = tuple(a for a in args if a in (bool, int, float, str))
    if len(plain) != len([a for a in args if a is not type(None)]):
        return (), optional  # a sequence, callable or array hint: passed through unchecked
    return plain, optional


def selector_options(selector: Callable[..., Any]) -> dict[str, OptionSpec]:
    """The settable options of one selector function, by name."""
    try:
        hints = typing.get_type_hints(selector)
    except Exception:  # noqa: BLE001 - an unresolvable hint only disables the type check
        hints = {}
    out = {}
    for name, p in inspect.signature(selector).parameters.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or name in SHARED or name in _INTERNAL:
            continue
        kinds, optional = _plain_types(hints.get(name, Any))
        out[name] = OptionSpec(name, p.default, kinds, optional or p.default is None)
    return out


def _convert(spec: OptionSpec, value: Any, method: str) -> Any:
    if value is None:
        if spec.optional:
            return None
        raise ValueError(f"option {spec.name} of method {method!r} may not be null; expected {spec.describe()}")
    if not spec.types:
        return value
    if isinstance(value, str) and str not in spec.types:
        text = value.strip()
        for kind in (bool, int, float):
            if kind not in spec.types:
                continue
            if kind is bool and text.lower() in ("true", "false"):
                return text.lower() == "true"
            if kind is not bool:
                try:
                    return kind(text)
                except ValueError:
                    continue
        if spec.optional and text.lower() in ("none", "null", "~"):
            return None
        raise ValueError(f"option {spec.name} of method {method!r}: cannot read {value!r} as "
                         f"{'/'.join(t.__name__ for t in spec.types)}")
    if isinstance(value, bool) and bool not in spec.types:
        raise ValueError(f"option {spec.name} of method {method!r}: got {value!r}; expected {spec.describe()}")
    if isinstance(value, int) and not isinstance(value, bool) and int not in spec.types and float in spec.types:
        return float(value)
    if isinstance(value, float) and int in spec.types and float not in spec.types:
        if value.is_integer():
            return int(value)
        raise ValueError(f"option {spec.name} of method {method!r}: got {value!r}; expected a whole number")
    if not isinstance(value, spec.types):
        raise ValueError(f"option {spec.name} of method {method!r}: got {value!r} ({type(value).__name__}); "
                         f"expected {spec.describe()}")
    return value


def check_options(method: str, selector: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and convert selector options for ``method``.

    Raises
    ------
    ValueError
        For a name the selector does not take (the message lists the valid names and the closest match) or a value
        that is not of the option's type.
    """
    specs = selector_options(selector)
    out = {}
    for name, value in options.items():
        if name in _INTERNAL:
            out[name] = value
            continue
        spec = specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(s.describe() for s in specs.values()) or "none"
            raise ValueError(f"unknown option {name!r} for method {method!r}{hint}; its options are: {valid}")
        out[name] = _convert(spec, value, method)
    return out


def options_for_method(method: str, options: Mapping[str, Any], selectors: Mapping[str, Callable[..., Any]]
                       ) -> dict[str, Any]:
    """The part of one options mapping shared by several methods (a demo running every selector with one config
    section) that ``method`` takes. A name that *no* selector takes is still an error, listing the valid names."""
    every = {name for fn in selectors.values() for name in selector_options(fn)}
    unknown = sorted(k for k in options if k not in every)
    if unknown:
        close = {k: difflib.get_close_matches(k, sorted(every), n=1) for k in unknown}
        hints = "; ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
        raise ValueError(f"unknown selector option(s) {hints}; valid options: {', '.join(sorted(every))}")
    mine = selector_options(selectors[method])
    return check_options(method, selectors[method], {k: v for k, v in options.items() if k in mine})
