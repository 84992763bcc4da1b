"""Stage 1–2 of the pipeline, *featurize → store*: per-sample gradients (:mod:`.gradients`), run over data sets
and checkpoints (:mod:`.featurize`), seeded random projections (:mod:`.projection`), embedding features
(:mod:`.embeddings`), the resumable on-disk feature store (:mod:`.store`), sharded featurization
(:mod:`.distributed`, merged by :mod:`.merge`) and out-of-core output arrays (:mod:`.outofcore`).

Nothing is imported here, so ``import tarot.features.store`` loads no torch.
"""
