"""The application layer: the ``tarot`` command line (:mod:`.cli`), configs (:mod:`.config`), reports
(:mod:`.report`), paired comparisons and verdicts (:mod:`.compare`), the demo (:mod:`.demo`), synthetic data
(:mod:`.synthetic`), benchmarks (:mod:`.bench`) and argparse types (:mod:`.argtypes`).

Modules here may import the algorithms; no algorithm module (features, geometry, ot, selectors, weighting, result,
api) imports anything from here — ``tests/test_layout.py`` checks it.
"""
