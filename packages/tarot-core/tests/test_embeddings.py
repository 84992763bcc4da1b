"""Embeddings as a feature source: EmbeddingFeaturizer through the feature store and the selectors."""

import numpy as np
import pytest
import tarot
import torch
from _tiny_models import HID, Samples, TinyNet


def hidden(model, batch):
    """The tiny net's hidden layer (eval mode: running BatchNorm statistics, no dropout)."""
    return torch.relu(model.bn(model.fc1(batch["x"] + model.offset)))


def test_embedding_store_equals_the_hidden_layer_summed_over_checkpoints(tmp_path):
    model = TinyNet(0)
    ds = Samples(23, seed=1)
    other = TinyNet(5).state_dict()
    feat = tarot.EmbeddingFeaturizer(model, hidden, dim=HID)
    store = tarot.featurize_to_store(feat, {"candidate": ds, "target": Samples(7, seed=2)}, tmp_path / "emb",
                                     checkpoints=[tarot.Checkpoint("a"), tarot.Checkpoint("b", state_dict=other)],
                                     batch_size=5, progress=False)
    x = torch.stack([ds[i]["x"] for i in range(len(ds))])
    ref = TinyNet(0).eval()
    with torch.no_grad():
        expected = hidden(ref, {"x": x})
        ref.load_state_dict(other)
        expected = expected + hidden(ref, {"x": x})
    np.testing.assert_allclose(np.asarray(store.features("candidate")), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert store.manifest["projector"]["type"] == "identity" and store.dim == HID
    assert model.training  # the model's mode is restored
    # every selector runs on it unchanged
    res = tarot.select(store, method="fixed_size", ratio=0.3, progress=False)
    assert res.size == int(0.3 * 23)


def test_projected_embeddings_and_bad_embed_functions(tmp_path):
    model = TinyNet(0)
    feat = tarot.EmbeddingFeaturizer(model, hidden, dim=HID, proj_dim=4, seed=3)
    batch = {"x": torch.randn(5, 6)}
    out = feat.project(feat.per_sample_grads(batch))
    assert out.shape == (5, 4) and feat.config()["projector"]["type"] == "rademacher"
    bad = tarot.EmbeddingFeaturizer(model, lambda m, b: b["x"], dim=HID)
    with pytest.raises(ValueError, match=r"expected \[batch, 8\]"):
        bad.per_sample_grads(batch)
    with pytest.raises(TypeError, match="callable"):
        tarot.EmbeddingFeaturizer(model, None, dim=HID)
