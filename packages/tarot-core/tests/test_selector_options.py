"""Inputs tarot.select refuses with a clear error: misspelt or mistyped selector options (text values are converted),
non-finite features (the row is named, whitened or not) and fractional budgets."""

from __future__ import annotations

import numpy as np
import pytest
import tarot
from tarot.selectors import SELECTORS
from tarot.selectors.options import check_options, options_for_method, selector_options


@pytest.fixture(scope="module")
def features():
    mix = tarot.make_mixture(seed=0, n_per_mode=80, n_off_target=60, n_targets=40, dim=16)
    return mix.candidates, mix.targets


def test_options_come_from_the_signature():
    fs = selector_options(SELECTORS["fixed_size"])
    assert fs["fill_rounds"].default == 12 and fs["fill_rounds"].types == (int,)
    assert {"seed", "eps", "ot_tol", "progress"}.isdisjoint(fs)  # passed by tarot.select itself
    otm = selector_options(SELECTORS["otm"])
    assert otm["min_score"].optional and "value_fn" not in otm
    assert selector_options(SELECTORS["random"]) == {}


def test_a_misspelt_option_is_an_error_naming_the_valid_ones(features):
    C, T = features
    with pytest.raises(ValueError, match=r"unknown option 'fil_rounds' for method 'fixed_size' \(did you mean "
                                         r"'fill_rounds'\?\); its options are: fill_rounds \(int, default 12\)"):
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
    ({"layers": 3}, r"option layers of method 'fixed_size': got 3 \(int\); expected layers \(str"),
])
def test_values_of_the_wrong_type_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_options("fixed_size", SELECTORS["fixed_size"], options)


def test_one_options_section_for_several_methods():
    shared = {"folds": 3, "fill_rounds": "4"}
    assert options_for_method("random", shared, SELECTORS) == {}
    assert options_for_method("otm", shared, SELECTORS) == {"folds": 3}
    assert options_for_method("fixed_size", shared, SELECTORS) == {"fill_rounds": 4}
    with pytest.raises(ValueError, match=r"unknown selector option\(s\) 'fols' \(did you mean 'folds'\?\)"):
        options_for_method("otm", {"fols": 3}, SELECTORS)


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
