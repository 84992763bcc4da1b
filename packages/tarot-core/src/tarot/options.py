r"""Typed options of every selector and of the pipeline stages around it: one frozen dataclass each, with defaults,
bounds, choices and help text in one place.

=================  ==========================================================================================
class              options of
=================  ==========================================================================================
RandomOptions      ``method="random"`` (none)
TopkMeanOptions    ``method="topk_mean"`` (none)
LessOptions        ``method="less"``: ``checkpoint_weights``
RoundRobinOptions  ``method="round_robin"``: ``layers``
FixedSizeOptions   ``method="fixed_size"``: ``fill_rounds``, ``layers``, ``fill_context``, ``fill_rule``, ...
OTMOptions         ``method="otm"``: ``folds``, ``fold_seed``, ``min_score``, ``patience``, ``max_depth``, ...
TSDSOptions        ``method="tsds"``: ``alpha``, ``C``, ``sigma``, ``max_k``, ``kde_k``
WhiteningOptions   the whitening stage of :func:`tarot.select`: ``ridge``, ``fit_on``
OTOptions          every OT problem: ``eps`` (ε), ``ot_tol``, ``ot_value_tol``
WeightingOptions   potential weighting: ``beta``, ``total_repeats``, ``min_repeats``, ``max_weight_ratio``
=================  ==========================================================================================

:meth:`Options.from_mapping` is the one check every :func:`tarot.select` call, the ``tarot`` CLI and the domain
configs go through: a name the class does not define raises :class:`ValueError` listing the valid ones (and the
closest match, so a misspelt ``fil_rounds=3`` is an error, not a silently ignored setting), text values from YAML or
``--set`` are converted to the field's type, and values outside their bounds or choices are refused with the option's
name. The resolved options of a selection are saved in its ``config.json`` (``selector_options``), as peft saves its
config beside every adapter.

This module imports nothing heavy (no numpy, torch or POT), so command lines can list the options in ``--help``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: options tarot.select passes to a selector itself when the selector takes them (not settable per selector)
SHARED = ("seed", "eps", "ot_tol", "ot_value_tol", "progress", "target_groups")
#: callables for tests (e.g. otm's value_fn): passed through unchecked, never saved
INTERNAL = ("value_fn",)


def option(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, choices: Sequence[Any] | None = None,
           label: str = "") -> Any:
    """A dataclass field with its help text and bounds (``minimum``/``maximum`` inclusive, ``above``/``below``
    exclusive) or allowed ``choices``; ``label`` names the kind of a value that is not a plain scalar."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "above": above, "below": below,
            "choices": None if choices is None else tuple(choices), "label": label}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option: name, default, the plain types its hint admits (empty = not type-checked), bounds and help."""

    name: str
    default: Any
    types: tuple[type, ...]
    optional: bool
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    label: str = ""

    def kind(self) -> str:
        """The admitted values in words, e.g. ``int >= 1``, ``'unique' | 'rank'``, ``float in (0, 1) or null``."""
        if self.choices is not None:
            text = " | ".join(repr(c) for c in self.choices)
        else:
            text = "/".join(t.__name__ for t in self.types) or self.label or "any"
            low = (f"[{self.minimum:g}" if self.minimum is not None else f"({self.above:g}"
                   if self.above is not None else None)
            high = (f"{self.maximum:g}]" if self.maximum is not None else f"{self.below:g})"
                    if self.below is not None else None)
            if low and high:
                text += f" in {low}, {high}"
            elif low:
                text += f" {'>=' if self.minimum is not None else '>'} {low[1:]}"
            elif high:
                text += f" {'<=' if self.maximum is not None else '<'} {high[:-1]}"
        return text + (" or null" if self.optional else "")

    def describe(self) -> str:
        return f"{self.name} ({self.kind()}, default {self.default!r})"

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` checked against this option (text read as the option's type), else a ValueError naming it."""
        where = f"option {self.name} of {owner}"
        if value is None or (isinstance(value, str) and self.optional and str not in self.types
                             and value.strip().lower() in ("none", "null", "~")):
            if self.optional:
                return None
            raise ValueError(f"{where} may not be null; expected {self.describe()}")
        value = self._typed(value, where)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}: got {value!r}; expected one of {', '.join(map(repr, self.choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"{where}: got nan; expected {self.kind()}")
            bad = ((self.minimum is not None and value < self.minimum) or (self.maximum is not None and value >
                   self.maximum) or (self.above is not None and value <= self.above) or
                   (self.below is not None and value >= self.below))
            if bad:
                raise ValueError(f"{where}: got {value!r}; expected {self.kind()}")
        return value

    def _typed(self, value: Any, where: str) -> Any:
        if not self.types:
            return value
        if isinstance(value, str) and str not in self.types:
            text = value.strip()
            for kind in (bool, int, float):
                if kind not in self.types:
                    continue
                if kind is bool:
                    if text.lower() in ("true", "false"):
                        return text.lower() == "true"
                    continue
                try:
                    return kind(text)
                except ValueError:
                    continue
            raise ValueError(f"{where}: cannot read {value!r} as {'/'.join(t.__name__ for t in self.types)}")
        if isinstance(value, bool) and bool not in self.types:
            raise ValueError(f"{where}: got {value!r}; expected {self.describe()}")
        if isinstance(value, int) and not isinstance(value, bool) and int not in self.types and float in self.types:
            return float(value)
        if isinstance(value, float) and int in self.types and float not in self.types:
            if value.is_integer():
                return int(value)
            raise ValueError(f"{where}: got {value!r}; expected a whole number")
        if not isinstance(value, self.types):
            raise ValueError(f"{where}: got {value!r} ({type(value).__name__}); expected {self.describe()}")
        return value


def _plain_types(hint: Any) -> tuple[tuple[type, ...], bool]:
    """The builtin scalar types a hint admits and whether it admits None; any other hint is not type-checked."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    plain = tuple(a for a in args if a in (bool, int, float, str))
    if len(plain) != len([a for a in args if a is not type(None)]):
        return (), optional  # a sequence hint: passed through unchecked
    return plain, optional


@dataclass(frozen=True)
class Options:
    """Base of every options class: fields are checked against their specs when an instance is made."""

    #: who these options belong to, for error messages ("method 'fixed_size'", "whitening")
    owner: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        specs = self.specs()
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, specs[f.name].convert(getattr(self, f.name), self.owner))

    @classmethod
    def specs(cls) -> dict[str, OptionSpec]:
        """Every option of this class, by name, in definition order."""
        cached = cls.__dict__.get("_specs")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = {}
            for f in dataclasses.fields(cls):
                kinds, optional = _plain_types(hints[f.name])
                meta = dict(f.metadata)
                cached[f.name] = OptionSpec(f.name, f.default, kinds, optional or f.default is None,
                                            meta.pop("help", ""), **meta)
            cls._specs = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Options:
        """An instance from a mapping of (possibly text) values; unknown names are refused, listing the valid ones."""
        specs = cls.specs()
        for name in values:
            if name not in specs:
                raise ValueError(unknown_option_message(name, cls.owner, specs))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def unknown_option_message(name: str, owner: str, specs: Mapping[str, OptionSpec]) -> str:
    close = difflib.get_close_matches(name, list(specs), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    valid = ", ".join(s.describe() for s in specs.values()) or "none"
    return f"unknown option {name!r} for {owner}{hint}; its options are: {valid}"


# ---------------------------------------------------------------------------------------------- selectors
_LAYERS_HELP = ("'unique': layer r holds each target's r-th distinct pick in a round robin, one new candidate per "
                "target per layer; 'rank': the reference's layers (every target's r-th nearest candidate, duplicates "
                "collapsed), which give a dense target mode fewer candidates than its share")
_OT_MAX_ITER_HELP = "Sinkhorn iteration cap of the selector's own OT problems"


@dataclass(frozen=True)
class RandomOptions(Options):
    """``random``: uniform without replacement, seeded by ``select(seed=...)``; no options of its own."""

    owner: ClassVar[str] = "method 'random'"


@dataclass(frozen=True)
class TopkMeanOptions(Options):
    """``topk_mean``: the n highest mean cosines to the targets (DsDm/LESS-style greedy); the feature space is
    ``select(space=...)``; no options of its own."""

    owner: ClassVar[str] = "method 'topk_mean'"


@dataclass(frozen=True)
class LessOptions(Options):
    """``less``: LESS's max over target subtasks of the checkpoint-weighted mean cosine."""

    owner: ClassVar[str] = "method 'less'"
    checkpoint_weights: Sequence[float] | None = option(
        None, "weight w_c of every checkpoint (LESS: the mean learning rate of its epoch), normalised to sum 1; "
        "default: equal weights", label="list of float")


@dataclass(frozen=True)
class RoundRobinOptions(Options):
    """``round_robin``: targets take turns picking their nearest not-yet-selected candidate."""

    owner: ClassVar[str] = "method 'round_robin'"
    layers: str = option("unique", _LAYERS_HELP, choices=("unique", "rank"))


@dataclass(frozen=True)
class FixedSizeOptions(Options):
    """``fixed_size`` (Algorithm 1): neighbourhood layers, the partial layer filled by smallest OT potential."""

    owner: ClassVar[str] = "method 'fixed_size'"
    fill_rounds: int = option(
        12, "rounds R of the partial-layer fill, each re-solving OT warm-started (1 = one-shot fill); 12 kept every "
        "mode of 0.6/0.3/0.1 mixtures within about 0.05 of its share at 5-20 % budgets, 4 left the dominant one up "
        "to 0.09 short", minimum=1)
    layers: str = option("unique", _LAYERS_HELP, choices=("unique", "rank"))
    fill_context: str = option(
        "selection", "'selection': potentials given the current selection (soft-min extension to the partial layer); "
        "'layer': potentials of OT(uniform on the layer, targets) alone, one shot (the reference's measure)",
        choices=("selection", "layer"))
    fill_rule: str = option(
        "smallest", "'smallest' is the method; 'largest' reproduces the reference's sign and 'random' is a random "
        "fill (both for the sign test)", choices=("smallest", "largest", "random"))
    ot_max_iter: int = option(2000, _OT_MAX_ITER_HELP, minimum=1)


@dataclass(frozen=True)
class OTMOptions(Options):
    """``otm`` (Algorithm 2): k-fold OT-distance minimisation over neighbourhood depth; estimates the ratio."""

    owner: ClassVar[str] = "method 'otm'"
    folds: int = option(10, "number of target folds (reference: 10); at most the number of targets", minimum=2)
    fold_seed: int = option(42, "seed of the fold shuffle (reference: 42)", minimum=0)
    min_score: float | None = option(
        0.0, "only neighbours with cosine > min_score enter a neighbourhood (reference: 0, i.e. WFD < sqrt 2); null "
        "disables; a fold with no such neighbour falls back to rank neighbourhoods (logged)", minimum=-1.0,
        maximum=1.0)
    patience: int = option(0, "non-improving depths tolerated after the best one (reference: 0)", minimum=0)
    min_improvement: float = option(0.0, "a depth improves only if its OT value is below best - min_improvement",
                                    minimum=0.0)
    max_depth: int | None = option(None, "depth cap (hitting it is reported as capped_folds); null: none",
                                   minimum=1)
    ot_max_iter: int = option(2000, _OT_MAX_ITER_HELP, minimum=1)


@dataclass(frozen=True)
class TSDSOptions(Options):
    """``tsds`` (Liu et al. 2024): KNN-KDE-regularised OT sampling distribution, n draws with replacement."""

    owner: ClassVar[str] = "method 'tsds'"
    alpha: float = option(0.5, "trade-off between the OT term and the uniform-regulariser (TSDS's alpha)",
                          above=0.0, below=1.0)
    C: float = option(1.0, "scale of the OT cost (TSDS's C)", above=0.0)
    sigma: float = option(0.75, "kernel width of the KNN density estimate that down-weights near-duplicates",
                          minimum=0.0)
    max_k: int = option(5000, "longest neighbour list per target (capped at N/10)", minimum=2)
    kde_k: int = option(1000, "neighbours of the density estimate (capped at N/10)", minimum=1)


#: method name -> its options class (the same names as tarot.methods.METHODS and tarot.selectors.SELECTORS)
SELECTOR_OPTIONS: dict[str, type[Options]] = {
    "random": RandomOptions,
    "topk_mean": TopkMeanOptions,
    "less": LessOptions,
    "round_robin": RoundRobinOptions,
    "fixed_size": FixedSizeOptions,
    "otm": OTMOptions,
    "tsds": TSDSOptions,
}


# ---------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class WhiteningOptions(Options):
    """The whitening stage (spec §4) of :func:`tarot.select`."""

    owner: ClassVar[str] = "whitening"
    ridge: float | str = option(
        "auto", "relative ridge lambda, or the rule that chooses it: 'auto' (the square-root rule: effective "
        "dimension sqrt(rows)), 'ledoit_wolf' or 'oas'")
    fit_on: str = option("both", "rows the whitening is fitted on", choices=("both", "candidates", "targets"))

    def __post_init__(self) -> None:
        super().__post_init__()
        ridge = self.ridge
        if isinstance(ridge, str):
            try:
                ridge = float(ridge)
            except ValueError:
                if ridge not in ("auto", "ledoit_wolf", "oas"):
                    raise ValueError(f"option ridge of whitening: got {self.ridge!r}; expected a number >= 0, "
                                     "'auto', 'ledoit_wolf' or 'oas'") from None
        if isinstance(ridge, bool) or (isinstance(ridge, float) and not ridge >= 0):
            raise ValueError(f"option ridge of whitening: got {self.ridge!r}; expected a number >= 0")
        object.__setattr__(self, "ridge", ridge)


@dataclass(frozen=True)
class OTOptions(Options):
    """Every entropic OT problem of a selection (selector, final distance, weighting)."""

    owner: ClassVar[str] = "ot"
    eps: float = option(1e-4, "entropic regularisation epsilon (relative to the cost scale)", above=0.0)
    ot_tol: float = option(
        1e-5, "Sinkhorn stops when the L1 marginal violation is below this (the method's 1e-5); the result's "
        "'converged' says whether it was reached", above=0.0)
    ot_value_tol: float | None = option(
        1e-7, "... or when the OT value changes by less than this (null: only the marginals decide); on mixtures "
        "(3 seeds) this stop gave the same selections and OT distances at ot_tol 1e-3 and 1e-5, the marginals still "
        "off by ~2e-3 (reported as converged: false, value_settled: true)", above=0.0)


@dataclass(frozen=True)
class WeightingOptions(Options):
    """Potential weighting (spec §10) of a selection."""

    owner: ClassVar[str] = "weighting"
    beta: float = option(0.5, "mirror step: weights a_i proportional to exp(-beta * standardised potential)",
                         minimum=0.0)
    total_repeats: int | None = option(None, "sum of the repeat counts (default: twice the selection size)",
                                       minimum=1)
    min_repeats: int = option(1, "every selected sample is repeated at least this often", minimum=0)
    max_weight_ratio: float | None = option(None, "clip of the largest to the smallest weight (null: none)",
                                            minimum=1.0)
    measure_continuous: str = option(
        "auto", "also report the OT distance of the continuous weights before rounding (weighted_ot_continuous): "
        "always, never, or auto = when the problem is small enough for the dense solver (at scale it costs one "
        "more full OT solve)", choices=("auto", "always", "never"))


STAGE_OPTIONS: dict[str, type[Options]] = {"whitening": WhiteningOptions, "ot": OTOptions,
                                           "weighting": WeightingOptions}


# ---------------------------------------------------------------------------------------------- checks
def options_class(method: str) -> type[Options]:
    try:
        return SELECTOR_OPTIONS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(SELECTOR_OPTIONS)}") from None


def selector_options(method: str) -> dict[str, OptionSpec]:
    """The settable options of one selector, by name."""
    return options_class(method).specs()


def check_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options given for ``method``, validated and converted (test callables in :data:`INTERNAL` pass through).

    Raises
    ------
    ValueError
        For a name the method does not take (listing the valid names and the closest match) or a value outside the
        option's type, bounds or choices.
    """
    cls = options_class(method)
    given = {k: v for k, v in options.items() if k not in INTERNAL}
    resolved = cls.from_mapping(given).as_dict()
    out = {k: resolved[k] for k in given}
    out.update({k: v for k, v in options.items() if k in INTERNAL})
    return out


def resolve_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``method`` with the given ones applied: what is saved beside a result."""
    cls = options_class(method)
    return cls.from_mapping({k: v for k, v in options.items() if k not in INTERNAL}).as_dict()


def options_for_method(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of one options mapping shared by several methods (a demo running every selector with one config
    section) that ``method`` takes. A name that *no* selector takes is still an error, listing the valid names."""
    every = {name for cls in SELECTOR_OPTIONS.values() for name in cls.specs()}
    unknown = sorted(k for k in options if k not in every)
    if unknown:
        close = {k: difflib.get_close_matches(k, sorted(every), n=1) for k in unknown}
        hints = "; ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
        raise ValueError(f"unknown selector option(s) {hints}; valid options: {', '.join(sorted(every))}")
    mine = selector_options(method)
    return check_options(method, {k: v for k, v in options.items() if k in mine})


def options_help(width: int = 100) -> str:
    """Every method's options with their kinds, defaults and help, as plain text (for ``--help`` epilogs)."""
    import textwrap

    lines = []
    for method, cls in SELECTOR_OPTIONS.items():
        specs = cls.specs()
        lines.append(f"{method}: {'(no options)' if not specs else ''}".rstrip())
        for spec in specs.values():
            lines.append(f"  {spec.describe()}")
            lines += textwrap.wrap(spec.help, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
