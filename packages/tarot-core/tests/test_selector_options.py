"""Inputs tarot.select refuses with a clear error: misspelt or mistyped selector options (text values are converted),
non-finite features (the row is named, whitened or not) and fractional budgets."""

from __future__ import annotations

import numpy as np
import pytest
import tarot
from tarot.options import check_options, options_for_method, selector_options
from tarot.selectors import SELECTORS


@pytest.fixture(scope="module")
def features():
    mix = tarot.make_mixture(seed=0, n_per_mode=80, n_off_target=60, n_targets=40, dim=16)
    return mix.candidates, mix.targets


def test_options_come_from_the_options_classes():
    fs = selector_options("fixed_size")
    assert fs["fill_rounds"].default == 12 and fs["fill_rounds"].types == (int,) and fs["fill_rounds"].minimum == 1
    assert fs["fill_rule"].choices == ("smallest", "largest", "random") and fs["fill_rule"].help
    assert {"seed", "eps", "ot_tol", "progress"}.isdisjoint(fs)  # passed by tarot.select itself
    otm = selector_options("otm")
    assert otm["min_score"].optional and "value_fn" not in otm
    assert selector_options("random") == {}


def test_a_misspelt_option_is_an_error_naming_the_valid_ones(features):
    C, T = features
    with pytest.raises(ValueError, match=r"unknown option 'fil_rounds' for method 'fixed_size' \(did you mean "
                                         r"'fill_rounds'\?\); its options are: fill_rounds \(int >= 1, default 12\), "
                                         r"layers \('unique' \| 'rank', default 'unique'\)"):
        tarot.select(C, T, method="fixed_size", n=30, fil_rounds=3, progress=False)
    with pytest.raises(ValueError, match=r"unknown option 'patiense' for method 'otm' \(did you mean 'patience'"):
        tarot.select(C, T, method="otm", ratio="auto", patiense=2, progress=False)
    with pytest.raises(ValueError, match=r"unknown option 'folds' for method 'random'.*its options are: none"):
        tarot.select(C, T, method="random", n=30, folds=3, progress=False)


def test_text_values_are_converted_and_recorded(features):
    C, T = features
    res = tarot.select(C, T, method="fixed_size", n=30, fill_rounds="3", progress=False)
    assert res.config["selector_options"]["fill_rounds"] == 3
    ref = tarot.select(C, T, method="fixed_size", n=30, fill_rounds=3, progress=False)
    assert np.array_equal(res.indices, ref.indices)
    res = tarot.select(C, T, method="otm", ratio="auto", min_score="null", folds=3.0, progress=False)
    assert res.config["selector_options"]["min_score"] is None and res.config["selector_options"]["folds"] == 3
    assert res.size > 0


@pytest.mark.parametrize(("options", "message"), [
    ({"fill_rounds": "abc"}, r"option fill_rounds of method 'fixed_size': cannot read 'abc' as int"),
    ({"fill_rounds": 2.5}, r"option fill_rounds of method 'fixed_size': got 2.5; expected a whole number"),
    ({"fill_rounds": True}, r"option fill_rounds of method 'fixed_size': got True; expected fill_rounds \(int"),
    ({"fill_rounds": None}, r"option fill_rounds of method 'fixed_size' may not be null"),
    ({"layers": 3}, r"option layers of method 'fixed_size': got 3 \(int\); expected layers \('unique' \| 'rank'"),
    ({"layers": "ranks"}, r"option layers of method 'fixed_size': got 'ranks'; expected one of 'unique', 'rank'"),
    ({"fill_rounds": 0}, r"option fill_rounds of method 'fixed_size': got 0; expected int >= 1"),
    ({"ot_max_iter": "-3"}, r"option ot_max_iter of method 'fixed_size': got -3; expected int >= 1"),
])
def test_values_of_the_wrong_type_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_options("fixed_size", options)


@pytest.mark.parametrize(("method", "options", "message"), [
    ("otm", {"folds": 1}, r"option folds of method 'otm': got 1; expected int >= 2"),
    ("otm", {"min_score": 1.5}, r"option min_score of method 'otm': got 1.5; expected float in \[-1, 1\] or null"),
    ("tsds", {"alpha": 1.0}, r"option alpha of method 'tsds': got 1.0; expected float in \(0, 1\)"),
    ("tsds", {"C": "0"}, r"option C of method 'tsds': got 0.0; expected float > 0"),
    ("round_robin", {"layers": "stacked"}, r"option layers of method 'round_robin': got 'stacked'"),
])
def test_bounds_and_choices_are_checked_for_every_method(method, options, message):
    with pytest.raises(ValueError, match=message):
        check_options(method, options)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps": 0}, r"option eps of ot: got 0.0; expected float > 0"),
    ({"ot_tol": "abc"}, r"option ot_tol of ot: cannot read 'abc' as float"),
    ({"ridge": "sqrt"}, r"option ridge of whitening: got 'sqrt'; expected a number >= 0, 'auto', 'ledoit_wolf'"),
    ({"ridge": -1.0}, r"option ridge of whitening: got -1.0; expected a number >= 0"),
    ({"fit_on": "all"}, r"option fit_on of whitening: got 'all'; expected one of 'both', 'candidates', 'targets'"),
    ({"min_repeats": -1}, r"option min_repeats of weighting: got -1; expected int >= 0"),
    ({"max_weight_ratio": 0.5}, r"option max_weight_ratio of weighting: got 0.5; expected float >= 1 or null"),
])
def test_stage_arguments_of_select_are_checked(features, kwargs, message):
    C, T = features
    with pytest.raises(ValueError, match=message):
        tarot.select(C, T, method="random", n=5, progress=False, **kwargs)


def test_selector_defaults_are_the_options_defaults():
    """The selector functions' keyword defaults and their options classes agree (one set of defaults)."""
    import inspect

    from tarot.options import SELECTOR_OPTIONS

    assert set(SELECTOR_OPTIONS) == set(SELECTORS)
    for method, fn in SELECTORS.items():
        params = inspect.signature(fn).parameters
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), method  # no **_
        for name, spec in selector_options(method).items():
            assert params[name].default == spec.default, (method, name)


def test_a_selector_called_directly_refuses_unknown_and_bad_options(features):
    from tarot.selectors import fixed_size

    C, T = features
    with pytest.raises(TypeError, match="fil_rounds"):
        fixed_size(C, T, 10, fil_rounds=3)
    with pytest.raises(ValueError, match=r"option fill_rule of method 'fixed_size': got 'biggest'"):
        fixed_size(C, T, 10, fill_rule="biggest")


def test_every_resolved_option_is_saved_beside_the_result(features, tmp_path):
    from tarot.options import FixedSizeOptions

    C, T = features
    res = tarot.select(C, T, method="fixed_size", n=20, fill_rounds="2", ridge="0.5", progress=False)
    expected = {**FixedSizeOptions().as_dict(), "fill_rounds": 2}
    assert res.config["selector_options"] == expected and res.config["ridge"] == 0.5
    res.save(tmp_path / "sel")
    back = tarot.SelectionResult.load(tmp_path / "sel")
    assert back.config["selector_options"] == expected


def test_options_help_lists_every_method_with_its_help():
    from tarot.options import options_help

    text = options_help()
    for method in SELECTORS:
        assert f"{method}:" in text
    assert "fill_rounds (int >= 1, default 12)" in text and "rounds R of the partial-layer fill" in text


def test_one_options_section_for_several_methods():
    shared = {"folds": 3, "fill_rounds": "4"}
    assert options_for_method("random", shared) == {}
    assert options_for_method("otm", shared) == {"folds": 3}
    assert options_for_method("fixed_size", shared) == {"fill_rounds": 4}
    with pytest.raises(ValueError, match=r"unknown selector option\(s\) 'fols' \(did you mean 'folds'\?\)"):
        options_for_method("otm", {"fols": 3})


@pytest.mark.parametrize("whiten_features", [True, False])
def test_non_finite_features_are_refused_with_the_row(features, whiten_features):
    C, T = features
    C = C.copy()
    C[7, 2] = np.inf
    with pytest.raises(ValueError, match=r"^candidate features: row 7 has non-finite values"):
        tarot.select(C, T, method="random", n=5, whiten_features=whiten_features, progress=False)
    T = T.copy()
    T[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^candidate features: row 7"):  # candidates are checked first
        tarot.select(C, T, method="random", n=5, progress=False)
    with pytest.raises(ValueError, match=r"^target features: row 3 has non-finite values"):
        tarot.select(features[0], T, method="topk_mean", n=5, whiten_features=whiten_features, progress=False)


def test_a_fractional_budget_is_refused(features):
    C, T = features
    with pytest.raises(ValueError, match=r"n must be a whole number of candidates, got 2.5"):
        tarot.select(C, T, method="random", n=2.5, progress=False)
    assert tarot.select(C, T, method="random", n=3.0, progress=False).size == 3


def test_the_light_method_list_matches_the_selectors():
    from tarot.methods import METHODS

    assert METHODS == tuple(SELECTORS)
