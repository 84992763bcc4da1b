"""Stage 3–4 of the pipeline, *whiten → score*: the whitening transform fitted on the candidate pool
(:mod:`.whitening`) and streamed cosine / top-k scoring of candidates against targets (:mod:`.scoring`)."""
