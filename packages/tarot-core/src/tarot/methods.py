"""Names of the selection methods, without importing them (the ``tarot`` CLI builds its ``--help`` from these; the
functions themselves live in :mod:`tarot.selectors`, whose ``SELECTORS`` has exactly these keys, in this order)."""

METHODS: tuple[str, ...] = ("random", "topk_mean", "less", "round_robin", "fixed_size", "otm", "tsds")
