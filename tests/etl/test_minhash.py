"""etl.text.minhash (numpy only): normalisation, shingles, signatures and banding against plain-Python references."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from bench.minhash_corpus import core_scores, make_corpus, normalize as reference_normalize, shingles as reference_shingles
from etl.load_config import validate_pipeline_config
from etl.text import minhash
from shards.config import ConfigError

EDGE_CASES = [
    "", "   ", "!!!", "a", "a b", "Hello,  World!!\tagain\n\nand again...", "  leading and trailing  ",
    "Caf\u00e9 na\u00efve \u2014 \u201cquoted\u201d \u2018text\u2019 and x_y 42", "\u00c9T\u00c9 \u00e0 la plage",
    "mixed\u00a0nbsp and emoji \U0001f600 here", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
]


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(400, seed=3)


def test_normalize_matches_reference(corpus):
    texts = EDGE_CASES + corpus.texts
    assert minhash.normalize(pa.array(texts)).to_pylist() == [reference_normalize(t) for t in texts]
    assert minhash.normalize(pa.array([None, "A"])).to_pylist() == ["", "a"]


@pytest.mark.parametrize("kind,n", [("word", 5), ("word", 1), ("char", 5)])
def test_shingle_sets_match_reference(corpus, kind, n):
    texts = EDGE_CASES + corpus.texts[:150]
    hashes, offsets = minhash.shingle_hashes(minhash.normalize(pa.array(texts)), minhash.ShingleSpec(kind, n))
    distinct, distinct_offsets = minhash.unique_per_document(hashes, offsets)
    for i, text in enumerate(texts):
        if kind == "word":
            expected = reference_shingles(text, n)
        else:
            normalized = reference_normalize(text)
            expected = {normalized[j:j + n] for j in range(max(len(normalized) - n + 1, 1))} if normalized else set()
        assert distinct_offsets[i + 1] - distinct_offsets[i] == len(expected), (kind, text[:60])


def test_shingle_hashes_independent_of_batch_position():
    spec = minhash.ShingleSpec()
    text = "the same words in the same order give the same shingles"
    alone, _ = minhash.shingle_hashes(minhash.normalize(pa.array([text])), spec)
    mixed, offsets = minhash.shingle_hashes(minhash.normalize(pa.array(["other text first " * 7, text])), spec)
    assert np.array_equal(alone, mixed[offsets[1]:offsets[2]])


def test_exact_jaccard_matches_python_sets(corpus):
    spec = minhash.ShingleSpec()
    left, right = corpus.texts[:100], corpus.texts[100:200] + []
    # Put real near-duplicates in: each planted copy next to its source.
    by_id = dict(zip(corpus.ids, corpus.texts))
    copies = [(by_id[o.split(":")[-1]], by_id[i]) for i, o in corpus.origin.items() if o != "base"][:50]
    left += [a for a, _ in copies]
    right += [b for _, b in copies]
    a = minhash.shingle_hashes(minhash.normalize(pa.array(left)), spec)
    b = minhash.shingle_hashes(minhash.normalize(pa.array(right)), spec)
    got = minhash.exact_jaccard(*a, *b)
    for k, (x, y) in enumerate(zip(left, right)):
        sx, sy = reference_shingles(x), reference_shingles(y)
        assert got[k] == pytest.approx(len(sx & sy) / len(sx | sy))


def test_signatures_are_seeded_and_estimate_jaccard(corpus):
    spec = minhash.ShingleSpec()
    by_id = dict(zip(corpus.ids, corpus.texts))
    pairs = [(by_id[o.split(":")[-1]], by_id[i]) for i, o in corpus.origin.items() if o != "base"]
    left, right = pa.array([a for a, _ in pairs]), pa.array([b for _, b in pairs])
    hasher = minhash.MinHasher(256, seed=7)
    sig_a, has_a = hasher.signatures_of_texts(left, spec)
    sig_b, _ = hasher.signatures_of_texts(right, spec)
    assert has_a.all() and sig_a.dtype == np.uint32 and sig_a.shape == (len(pairs), 256)
    again, _ = minhash.MinHasher(256, seed=7).signatures_of_texts(left, spec)
    other, _ = minhash.MinHasher(256, seed=8).signatures_of_texts(left, spec)
    assert np.array_equal(sig_a, again) and not np.array_equal(sig_a, other)
    estimated = minhash.estimated_jaccard(sig_a, sig_b)
    exact = np.array([len(reference_shingles(a) & reference_shingles(b)) / len(reference_shingles(a) | reference_shingles(b))
                      for a, b in pairs])
    errors = estimated - exact
    assert abs(errors.mean()) < 0.01  # unbiased
    assert errors.std() < 1.3 * np.sqrt((exact * (1 - exact)).mean() / 256) + 1e-3  # binomial spread


def test_documents_without_shingles_get_no_signature():
    sigs, has = minhash.MinHasher(16, 1).signatures_of_texts(pa.array(["", None, "!!", "word"]), minhash.ShingleSpec())
    assert has.tolist() == [False, False, False, True]
    assert (sigs[:3] == np.iinfo(np.uint32).max).all()


def test_band_hashes_change_only_where_the_slice_changes():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(2, 20), dtype=np.uint32)
    sigs[1] = sigs[0]
    sigs[1, 7] ^= 1  # inside band 1 of 4 x 5
    bands = minhash.band_hashes(sigs, 4, 5)
    assert bands.dtype == np.int64
    assert (bands[0] == bands[1]).tolist() == [True, False, True, True]
    assert len(set(bands[0].tolist())) == 4  # equal slices of different bands still differ


def test_optimal_bands_match_datasketch():
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold, num_perm in [(0.8, 128), (0.7, 128), (0.5, 256), (0.9, 64)]:
        assert minhash.optimal_bands(threshold, num_perm) == lsh._optimal_param(threshold, num_perm, 0.5, 0.5)


def test_core_scores_classify_documents():
    truth = [0, 0, 2, 3, 4, 4]
    predicted = [0, 0, 0, 3, 4, 5]  # doc 2 wrongly joined; docs 4/5 split
    scores = core_scores(truth, predicted)
    assert (scores["TP"], scores["FP"], scores["TN"], scores["FN"]) == (2, 1, 1, 2)


def _stage_config(params):
    return {"output": "/tmp/unused", "inputs": [{"path": "/tmp/x", "source": "web"}],
            "stages": [{"name": "minhash_dedup", "params": params}]}


@pytest.mark.parametrize("params,message", [
    ({"bands": 10}, "bands and rows must be given together"),
    ({"bands": 20, "rows": 10}, "at most num_perm"),
    ({"keep": "quality"}, "needs quality_column"),
    ({"verify": "exact", "incremental": True}, "keeps no text"),
    ({"threshold": 1.5}, "threshold must be in (0, 1)"),
    ({"shingle": "sentence"}, "must be one of"),
    ({"treshold": 0.8}, "unknown key 'treshold'"),
])
def test_bad_params_are_reported_by_key(params, message):
    with pytest.raises(ConfigError, match="stages\\[0\\]\\.params") as err:
        validate_pipeline_config(_stage_config(params), check_inputs=False)
    assert message in str(err.value)


def test_band_rows_default_and_override():
    config, stages = validate_pipeline_config(_stage_config({}), check_inputs=False)
    assert stages[0].params.band_rows() == (12, 10)  # recall-leaning weights 0.2 / 0.8
    config, stages = validate_pipeline_config(_stage_config({"bands": 16, "rows": 8}), check_inputs=False)
    assert stages[0].params.band_rows() == (16, 8)
