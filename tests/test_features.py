"""Featurizers stay sparse, fit on train only, and round-trip through their saved state."""

import numpy as np
import pytest
import scipy.sparse as sp
from omegaconf import OmegaConf

from conftest import CONF, synthetic_rows
from losslab.data.batches import SparseBatches, csr_to_batch
from losslab.data.features import Featurizer
from losslab.model.network import PReLUMLP, SparseLinear

TRAIN = ["hola <user> qué tal", "eres un idiota <<url>>", "qué bonito día", "hola idiota"]


@pytest.mark.parametrize("name", ["onehot", "tfidf", "ngrams"])
def test_every_features_config_is_sparse_and_round_trips(name):
    cfg = OmegaConf.load(CONF / "features" / f"{name}.yaml")
    for part in ("word", "char"):
        if cfg.get(part):
            cfg[part].min_df = 1
    fitted = Featurizer.from_config(cfg).fit(TRAIN)
    x = fitted.transform(TRAIN + ["palabra nueva"])
    assert sp.issparse(x) and x.dtype == np.float32
    assert x.shape[1] == fitted.vocabulary_size
    if name != "ngrams":  # char n-grams of unseen words may still match
        assert x[-1].nnz == 0
    restored = Featurizer.from_state(*fitted.state())
    assert (restored.transform(TRAIN) != fitted.transform(TRAIN)).nnz == 0


@pytest.mark.parametrize("name", ["onehot", "tfidf", "ngrams"])
def test_saved_featurizer_loads_as_json_and_npz_and_transforms_identically(name, tmp_path):
    import json

    cfg = OmegaConf.load(CONF / "features" / f"{name}.yaml")
    train = [text for text, _ in synthetic_rows(60, ["aggressive", "calm", "sad"], seed=1)]
    new = [text for text, _ in synthetic_rows(20, ["aggressive", "calm", "sad"], seed=9)] + ["nada conocido aquí"]
    fitted = Featurizer.from_config(cfg).fit(train)
    fitted.save(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["featurizer.json", "featurizer.npz"]
    meta = json.loads((tmp_path / "featurizer.json").read_text(encoding="utf-8"))
    with np.load(tmp_path / "featurizer.npz", allow_pickle=False) as npz:  # raises on any pickled object
        arrays = {key: npz[key] for key in npz.files}
    assert sorted(arrays) == sorted(f"{part}.idf" for part in fitted.vectorizers if cfg.weighting == "tfidf")
    assert all(a.dtype != object for a in arrays.values()) and sorted(meta["parts"]) == sorted(fitted.vectorizers)

    loaded = Featurizer.load(tmp_path)
    assert loaded.weighting == fitted.weighting and loaded.vocabulary_size == fitted.vocabulary_size
    for part, vec in fitted.vectorizers.items():
        assert loaded.vectorizers[part].vocabulary_ == vec.vocabulary_
        if cfg.weighting == "tfidf":
            assert np.array_equal(loaded.vectorizers[part].idf_, vec.idf_)
    expected, got = fitted.transform(new), loaded.transform(new)
    assert expected.nnz > 0 and got.shape == expected.shape and got.dtype == expected.dtype
    expected.sort_indices()
    got.sort_indices()
    assert np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)  # same values, bit for bit


def test_onehot_is_binary_and_keeps_corpus_tokens():
    fitted = Featurizer.from_config({"weighting": "binary", "word": {"min_df": 1}}).fit(["hola hola <user> <<url>>"])
    assert set(fitted.vectorizers["word"].vocabulary_) == {"hola", "<user>", "<<url>>"}
    assert fitted.transform(["hola hola"]).data.tolist() == [1.0]


def test_sparse_linear_equals_dense_matmul():
    x = sp.random(5, 7, density=0.4, format="csr", dtype=np.float32, random_state=0)
    layer = SparseLinear(7, 3)
    indices, offsets, weights, _ = csr_to_batch(x)
    dense = torch_from(x) @ layer.weight + layer.bias
    assert np.allclose(layer(indices, offsets, weights).detach().numpy(), dense.detach().numpy(), atol=1e-6)


def torch_from(x):
    import torch

    return torch.from_numpy(x.toarray())


def test_batches_cover_every_row_and_shuffle_by_seed():
    x = sp.csr_matrix(np.eye(10, dtype=np.float32))
    y = np.arange(10)
    a, b = SparseBatches(x, y, 4, shuffle=True, seed=3), SparseBatches(x, y, 4, shuffle=True, seed=3)
    first = [batch[3].tolist() for batch in a]
    assert len(a) == 3 and sorted(sum(first, [])) == list(range(10))
    assert first == [batch[3].tolist() for batch in b]
    assert first == [batch[3].tolist() for batch in a]  # same epoch, same order
    a.set_epoch(1)
    assert first != [batch[3].tolist() for batch in a]  # next epoch, new order


def test_mlp_blocks_are_linear_prelu_dropout():
    import torch

    net = PReLUMLP(7, 3, hidden=8, depth=3, dropout=0.2)
    kinds = [type(m).__name__ for m in net.hidden]
    assert kinds == ["PReLU", "Dropout", "Linear", "PReLU", "Dropout", "Linear", "PReLU", "Dropout"]
    x = sp.csr_matrix(np.ones((2, 7), dtype=np.float32))
    assert net(*csr_to_batch(x)[:3]).shape == torch.Size([2, 3])


def test_dropout_keeps_units_with_probability_one_minus_p_scaled_and_seeded():
    import torch

    from losslab.model.network import Dropout, dropout

    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(0)
    out = dropout(x, 0.3, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: 5 standard errors is 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))  # inverted dropout: kept units scaled
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # the gradient flows through the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.3, training=True), out)  # the seed fixes the mask
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    layer = Dropout(0.3)
    assert isinstance(layer, torch.nn.Dropout) and layer.eval()(x) is x
    torch.manual_seed(0)
    assert torch.equal(layer.train()(x), out)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_are_the_csr_slices_of_the_passs_row_order(shuffle):
    import torch

    dense = sp.random(23, 9, density=0.3, dtype=np.float32, random_state=1).toarray()
    dense[4] = 0  # an empty row
    x = sp.csr_matrix(dense)
    y = np.arange(23) % 3
    batches = SparseBatches(x, y, 5, shuffle=shuffle, seed=2)
    batches.set_epoch(1)
    order = np.random.default_rng(3).permutation(23) if shuffle else np.arange(23)
    got = list(batches)
    assert len(got) == 5
    for i, batch in enumerate(got):
        rows = order[i * 5:(i + 1) * 5]
        for tensor, expected in zip(batch, csr_to_batch(x[rows], y[rows])):
            assert tensor.dtype == expected.dtype and torch.equal(tensor, expected)
