"""The tokenizer (train, save, load, CLI) and the tokenize stage's encoding and packing."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from etl.__main__ import main
from etl.stages.base import StageContext
from etl.dataset.tokenize import (
    TokenIds,
    Tokenize,
    TokenizeParams,
    _pack_batches,
    binary_array,
    binary_tokens,
    encode_texts,
)
from etl.dataset.tokenizer import DEFAULT_BOS, load_tokenizer, save_tokenizer
from etl.load_config import validate_pipeline_config
from shards.config import ConfigError
from tests.etl.corpus import docs_frame, fixture_docs, write_fixture_tokenizer


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_fixture_tokenizer(tmp_path_factory.mktemp("tok"))


def test_trained_tokenizer_round_trips_and_has_special_ids(tmp_path, tokenizer_path):
    loaded = load_tokenizer(os.path.dirname(tokenizer_path))  # the folder holding tokenizer.json
    assert loaded.url == tokenizer_path
    assert loaded.token_id("<|endoftext|>", "eos") == 0 and loaded.token_id("<|padding|>", "pad") == 1
    assert loaded.vocab_size == 320
    text = "the old captain said: déjà vu 🙂"  # bytes outside the training text still encode
    ids = loaded.tokenizer.encode(text, add_special_tokens=False).ids
    assert loaded.tokenizer.decode(ids) == text
    with open(tokenizer_path, "rb") as f:
        assert loaded.sha256 == hashlib.sha256(f.read()).hexdigest()
    with pytest.raises(ValueError, match="token '<nope>' is not in the tokenizer"):
        loaded.token_id("<nope>", "tokenize.eos_token")
    with pytest.raises(FileNotFoundError, match="train-tokenizer"):
        load_tokenizer(str(tmp_path / "missing"))


def test_tokenizer_on_object_store(s3_prefix, tokenizer_path):
    with open(tokenizer_path, "rb") as f:
        data = f.read()
    url = save_tokenizer(load_tokenizer(tokenizer_path).tokenizer, s3_prefix)
    assert url == f"{s3_prefix}/tokenizer.json"
    loaded = load_tokenizer(s3_prefix.replace("s3://", "s3a://"))
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()


def test_train_tokenizer_command(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "a.jsonl", "w") as f:
        for doc in fixture_docs(20):
            f.write(json.dumps({"body": doc["text"]}) + "\n")
        f.write("not json\n")
    out = tmp_path / "tok"
    argv = ["train-tokenizer", "--input", str(tmp_path / "in"), "--format", "jsonl", "--text-field", "body",
            "--vocab-size", "300", "--bos", "--out", str(out)]
    assert main(argv) == 0
    loaded = load_tokenizer(str(out))
    assert loaded.vocab_size == 300 and loaded.token_id(DEFAULT_BOS, "bos") == 2
    assert main(argv[:5] + ["--text-field", "missing", "--out", str(tmp_path / "x")]) == 2
    assert "no non-empty 'missing' values" in capsys.readouterr().err


def test_encode_texts_adds_specials_like_the_tokenizer(tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path).tokenizer
    texts = ["the old captain", "", "click here"]
    for ids in (TokenIds(eos=0, pad=None, bos=None), TokenIds(eos=0, pad=1, bos=5)):
        flat, lengths = encode_texts(tokenizer, texts, ids, np.dtype("<u2"))
        expected = [([ids.bos] if ids.bos is not None else []) + tokenizer.encode(t, add_special_tokens=False).ids + [ids.eos]
                    for t in texts]
        assert lengths.tolist() == [len(e) for e in expected]
        assert flat.tolist() == sum(expected, [])


def test_binary_columns_survive_slicing():
    values = np.arange(20, dtype="<u2")
    column = binary_array(values, np.array([3, 0, 7, 10]))
    got, bounds = binary_tokens(column.slice(2, 2), np.dtype("<u2"))
    assert bounds.tolist() == [0, 7, 17] and got.tolist() == list(range(3, 20))
    large, bounds = binary_tokens(column.cast(pa.large_binary()), np.dtype("<u2"))
    assert bounds.tolist() == [0, 3, 3, 10, 20] and large.tolist() == list(range(20))


def _sorted_rows(rows: list[tuple[str, int, list[int]]]) -> pa.RecordBatch:
    lengths = np.array([len(t) for _, _, t in rows])
    return pa.RecordBatch.from_arrays(
        [pa.array([s for s, _, _ in rows]), pa.array([b for _, b, _ in rows], pa.int32()),
         binary_array(np.array(sum((t for _, _, t in rows), []), "<u2"), lengths)],
        names=["split", "bucket", "tokens"],
    )


@pytest.mark.parametrize("pad_id", [None, 9])
def test_packing_cuts_each_bucket_and_handles_its_tail(pad_id):
    rows = [("train", 0, [1, 2, 3]), ("train", 0, [4, 5]), ("train", 1, [6, 7, 8, 9, 10, 11, 12]),
            ("train", 3, [13]), ("val", 0, [14, 15, 16, 17])]
    # The same rows in one batch and split over three batches pack the same.
    outputs = []
    for batches in ([_sorted_rows(rows)], [_sorted_rows(rows[:1]), _sorted_rows(rows[1:3]), _sorted_rows(rows[3:])]):
        out = pa.Table.from_batches(list(_pack_batches(iter(batches), 3, "uint16", pad_id)))
        outputs.append([(r["split"], r["bucket"], r["index"], np.frombuffer(r["tokens"], "<u2").tolist())
                        for r in out.to_pylist()])
    assert outputs[0] == outputs[1]
    full = [("train", 0, 0, [1, 2, 3]), ("train", 1, 0, [6, 7, 8]), ("train", 1, 1, [9, 10, 11]), ("val", 0, 0, [14, 15, 16])]
    tails = [("train", 0, 1, [4, 5, 9]), ("train", 1, 2, [12, 9, 9]), ("train", 3, 0, [13, 9, 9]), ("val", 0, 1, [17, 9, 9])]
    assert sorted(outputs[0]) == sorted(full + (tails if pad_id is not None else []))


def test_bad_params_are_reported_with_their_key(tmp_path, tokenizer_path, spark):
    def stages(params):
        data = {"output": str(tmp_path), "inputs": [{"path": str(tmp_path), "source": "s"}],
                "stages": [{"name": "tokenize", "params": params}]}
        return validate_pipeline_config(data, check_inputs=False)[1]

    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.tail: must be one of 'drop', 'pad'"):
        stages({"tokenizer": tokenizer_path, "tail": "cut"})
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        stages({"tokenizer": tokenizer_path, "val_fraction": 1.5})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.tokenizer: required key is missing"):
        stages({})
    # The tokenizer and its special tokens are checked when the config is loaded, before Spark runs.
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.tokenizer: no tokenizer at"):
        stages({"tokenizer": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.pad_token: token '<pad>' is not in the tokenizer"):
        stages({"tokenizer": tokenizer_path, "tail": "pad", "pad_token": "<pad>"})
    # A stage built in Python, without a config, checks them when it runs.
    ctx = StageContext(spark, str(tmp_path), str(tmp_path), "r")
    with pytest.raises(ConfigError, match="tokenize.tokenizer: no tokenizer at"):
        Tokenize(TokenizeParams(tokenizer=str(tmp_path / "none"))).run(docs_frame(spark, fixture_docs(1)), ctx)


def test_padded_tails_and_provenance_agree_with_samples(spark, tokenizer_path, tmp_path):
    """Spark end to end without Delta: every provenance segment points at its tokens in a sample."""
    docs = fixture_docs(8)
    params = TokenizeParams(tokenizer=tokenizer_path, seq_len=50, num_buckets=3, tail="pad", val_fraction=0.2, seed=3)
    result = Tokenize(params).run(docs_frame(spark, docs, 3), StageContext(spark, str(tmp_path), str(tmp_path), "r"))
    result.docs.persist()  # as the pipeline does: the tables reuse the encoded documents
    annotated = {r["id"]: r for r in result.docs.collect()}
    assert all(r["reason"] is None for r in annotated.values()) and len(annotated) == len(docs)
    samples = {(r["split"], r["bucket"], r["index"]): np.frombuffer(r["tokens"], "<u2") for r in result.tables["samples"].collect()}
    assert all(len(t) == 50 for t in samples.values())
    buckets = result.tables["buckets"].collect()
    assert sum(b["samples"] for b in buckets) == len(samples)
    tails = [b for b in buckets if b["tail_tokens"]]
    assert tails and {b["tail_action"] for b in tails} == {"padded"}
    for b in tails:  # the last sample of the bucket, padded with <|padding|>
        assert (samples[(b["split"], b["bucket"], b["samples"] - 1)][b["tail_tokens"]:] == 1).all()
    covered = {doc_id: 0 for doc_id in annotated}
    for seg in result.tables["provenance"].collect():
        doc_tokens = np.frombuffer(annotated[seg["doc_id"]]["tokens"], "<u2")
        sample = samples[(seg["split"], seg["bucket"], seg["sample_index"])]
        assert seg["kept"] and seg["split"] == annotated[seg["doc_id"]]["split"]
        assert (sample[seg["sample_offset"]: seg["sample_offset"] + seg["length"]]
                == doc_tokens[seg["doc_offset"]: seg["doc_offset"] + seg["length"]]).all()
        covered[seg["doc_id"]] += seg["length"]
    assert covered == {doc_id: r["num_tokens"] for doc_id, r in annotated.items()}
    assert result.metrics(result.docs)["samples"] == {
        split: sum(1 for k in samples if k[0] == split) for split in ("train", "val")}
    result.docs.unpersist()
