from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from tarot_vision import cls_data as C
from tarot_vision import cls_models as M
from vision_fixtures import write_cifar_batch


def test_cifar_batches_real_format(cifar_root):
    x, y = C.read_cifar10(cifar_root, "train")
    assert x.shape == (60, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    # row layout: 1024 R, 1024 G, 1024 B
    with (cifar_root / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(x[0, 1].ravel(), raw[b"data"][0, 1024:2048])
    np.testing.assert_array_equal(x[0, 2, 0, :5], raw[b"data"][0, 2048:2053])
    assert y[:20].tolist() == raw[b"labels"]
    xt, yt = C.read_cifar10(cifar_root, "test")
    assert xt.shape == (20, 3, 32, 32) and yt.tolist() == [i % 10 for i in range(20)]


def test_cifar_malformed_batches(tmp_path, cifar_root):
    bad = tmp_path / "bad_dtype"
    write_cifar_batch(bad, np.zeros((4, 3072), dtype=np.float32).astype(np.uint8), [0, 1, 2, 3])
    obj = pickle.load(bad.open("rb"), encoding="bytes")
    obj[b"data"] = obj[b"data"].astype(np.int16)
    pickle.dump(obj, bad.open("wb"), protocol=2)
    with pytest.raises(ValueError, match=r"bad_dtype: b'data' must be uint8 \[N, 3072\], got int16"):
        C.read_cifar_batch(bad)
    bad_shape = tmp_path / "bad_shape"
    obj[b"data"] = np.zeros((4, 1024), dtype=np.uint8)
    pickle.dump(obj, bad_shape.open("wb"), protocol=2)
    with pytest.raises(ValueError, match=r"bad_shape: b'data' must be uint8 \[N, 3072\], got uint8 \(4, 1024\)"):
        C.read_cifar_batch(bad_shape)
    labels_mismatch = tmp_path / "bad_labels"
    obj[b"data"] = np.zeros((4, 3072), dtype=np.uint8)
    obj[b"labels"] = [0, 1]
    pickle.dump(obj, labels_mismatch.open("wb"), protocol=2)
    with pytest.raises(ValueError, match="bad_labels: 4 images but 2 labels"):
        C.read_cifar_batch(labels_mismatch)
    with pytest.raises(FileNotFoundError, match="data_batch_9: CIFAR-10 batch file missing"):
        C.read_cifar_batch(cifar_root / "data_batch_9")


def test_cifar_restricted_unpickler_rejects_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    pickle.dump({b"data": Evil()}, path.open("wb"), protocol=2)
    with pytest.raises(ValueError, match=r"global (__builtin__|builtins)\.print is not allowed"):
        C.read_cifar_batch(path)


def test_idx_reader(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    header = b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in imgs.shape)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + imgs.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes([3, 9]))
    x, y = C.read_fashion_mnist(tmp_path, "train")
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 9]
    np.testing.assert_array_equal(x[:, 0], imgs)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + header[4:])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: not an unsigned-byte IDX file"):
        C.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")


def test_fashion_folder_option_and_missing_package(tmp_path, monkeypatch):
    imgs = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = bytes(i % 10 for i in range(30))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in imgs.shape) + imgs.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (30).to_bytes(4, "big") + labels)
    name, x, y, classes = C.load_demo_source("fashion_mnist", tmp_path)
    assert name == "fashion_mnist" and x.shape == (30, 1, 28, 28) and classes[0] == "T-shirt/top"
    monkeypatch.setattr(C, "fashion_mnist_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        C.load_demo_source("fashion_mnist")
    assert C.load_demo_source("auto")[0] == "digits"


def test_digits_source_is_real():
    name, x, y, classes = C.load_demo_source("digits")
    assert name == "digits" and x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8 and x.max() == 255
    assert np.bincount(y).min() >= 174 and len(classes) == 10
    with pytest.raises(ValueError, match="unknown demo dataset"):
        C.load_demo_source("mnist")


def test_resnet9_shapes_and_parameter_count():
    model = M.ResNet9()
    n = sum(p.numel() for p in model.parameters())
    assert 2.2e6 < n < 2.35e6
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    small = M.ResNet9(in_channels=1, width=0.125)
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # upsampled to 16x16 internally
    assert small(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_margin_definition():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    m = M.margins(logits, torch.tensor([0, 1]))
    assert torch.allclose(m[0], torch.tensor(2.0 - np.log(2.0), dtype=torch.float32))
    assert torch.allclose(m[1], torch.tensor(1.0) - torch.logsumexp(torch.tensor([0.0, 3.0]), 0))


def test_train_small_cnn_learns_and_is_deterministic():
    _, x, y, _ = C.load_demo_source("digits")
    ds = M.ImageClassDataset(x[:400], y[:400])
    test = M.ImageClassDataset(x[1400:], y[1400:])
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = M.SmallCNN(10, 1, width=8)
        M.train_classifier(model, ds, epochs=6, batch_size=64, lr=0.05, seed=3)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])
    assert M.accuracy(model, test) > 0.5


def test_penultimate_embedding_is_the_input_of_the_last_linear_layer():
    import torch
    from tarot_vision.cls_models import build_classifier, embedding_dim, penultimate

    torch.manual_seed(0)
    x = torch.randn(5, 1, 8, 8)
    for arch, width in (("small_cnn", 8), ("resnet9", 0.125)):
        model = build_classifier(arch, 10, 1, width).eval()
        with torch.no_grad():
            emb = penultimate(model, {"image": x})
            head = model.head if arch == "small_cnn" else torch.nn.Sequential(model[-2], model[-1])
            torch.testing.assert_close(head(emb), model(x))
        assert emb.shape == (5, embedding_dim(model))


@pytest.mark.parametrize("arch", ["small_cnn", "resnet9"])
def test_factorised_features_batch_mode_equals_one_sample_runs(arch):
    """ClassificationLoss.losses gives the factorised featurizer its batch mode on both classifiers (BatchNorm in
    eval mode, residual blocks, max-pooling): one batched backward gives the features of one-sample runs."""
    from tarot.features.factorized import FactorizedGradientFeaturizer

    _, x, y, _ = C.load_demo_source("digits")
    ds = M.ImageClassDataset(x[:6], y[:6])
    batch = {"image": ds.x, "label": ds.y}
    torch.manual_seed(0)
    model = M.build_classifier(arch, 10, 1, 8 if arch == "small_cnn" else 0.125)
    with pytest.warns(RuntimeWarning, match="left out"):  # BatchNorm weights
        fz = {m: FactorizedGradientFeaturizer(model, M.ClassificationLoss(), proj_dim=64, mode=m)
              for m in ("batch", "loop")}
    assert fz["batch"].mode == "batch"
    feats = {m: f.featurize_batch(batch) for m, f in fz.items()}
    assert feats["batch"].abs().max() > 0
    torch.testing.assert_close(feats["batch"], feats["loop"], rtol=1e-4, atol=1e-5 * float(feats["loop"].abs().max()))
