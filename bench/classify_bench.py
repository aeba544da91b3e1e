"""Throughput of the `classify` stage with a fastText model against a plain fastText loop.

The same model (trained by `python -m etl train-classifier --model fasttext` on the quality corpus of
etl/devtools/quality_corpus.py), the same documents, in the same run, taking turns:
  loop     fasttext's own Python API in one process, as a plain user writes it: one
           ``model.predict(text)`` per document (newlines replaced, as fastText needs);
  batched  the same, one ``model.predict(list_of_texts)`` call for all of them;
  spark    the stage's DataFrame on local[N] Spark, forced with the `noop` writer, after a warm-up
           (bench/pii_toxicity_bench.py's harness: best of N turns, wall and CPU seconds of the
           whole process tree).
Also timed once: the same documents through an identity ``mapInArrow`` (no model), the cost of
crossing from Spark's JVM to Python and back that every document stage pays, for scale, and through a
``pandas_udf`` that sends only the text and returns a number (the crossing one way, as the stage
scores).

    .venv/bin/python bench/classify_bench.py [--docs 200000] [--cores 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import pandas as pd  # module level: pandas_udf resolves the type hints of text_length below

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pii_toxicity_bench import best_of, spark_stage, timed  # noqa: E402  (the shared harness)


def train_model(folder: str) -> str:
    """A fastText model trained on the quality corpus's training sources, as the docs' workflow does."""
    from etl.classifier_train import TrainSettings, train_classifier
    from etl.devtools import quality_corpus

    files = quality_corpus.write_files(folder, docs_per_source=60)
    out = os.path.join(folder, "quality.bin")
    train_classifier([files["reference"]], [files["web"]], out, TrainSettings(model="fasttext"))
    return out


def make_texts(n: int, seed: int = 3) -> list[str]:
    """``n`` documents of the quality corpus (all sources), drawn with repetition, each 1-3 of them joined."""
    from etl.devtools import quality_corpus

    pool = [r["text"] for r in quality_corpus.build(docs_per_source=40, seed=seed)]
    rng = random.Random(seed)
    return ["\n\n".join(rng.sample(pool, rng.randint(1, 3))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000,
                        help="at 40,000 the run's fixed part (roughly 0.25-0.5 s) weighs on the stage's docs/s")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="time each side this many times, keep the best")
    args = parser.parse_args()
    os.environ.setdefault("KILN_SPARK_MASTER", f"local[{args.cores}]")
    os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))

    import fasttext

    from etl.spark import get_spark
    from etl.stages.classify import Classify, ClassifyParams

    folder = tempfile.mkdtemp(prefix="kiln-classify-bench-")
    model_path = train_model(folder)
    texts = make_texts(args.docs)
    n, megabytes = len(texts), sum(len(t.encode()) for t in texts) / 1e6
    print(f"{n} documents, {megabytes:.1f} MB; model {os.path.getsize(model_path) / 1e6:.0f} MB; {os.cpu_count()} CPUs, "
          f"Spark local[{args.cores}], best of {args.repeat}; load average {os.getloadavg()[0]:.1f}")

    model = fasttext.load_model(model_path)

    def per_document():
        return timed(lambda: [model.predict(t.replace("\n", " "), k=-1) for t in texts])

    def batched():
        return timed(lambda: model.predict([t.replace("\n", " ") for t in texts], k=-1))

    spark = get_spark("kiln-bench-classify")
    rows = [(f"d{i}", "bench", t, "h", None) for i, t in enumerate(texts)]
    docs = spark.createDataFrame(rows, "id string, source string, text string, content_hash string, meta map<string,string>")
    docs = docs.repartition(args.cores * 4).cache()
    docs.count()
    stage = Classify(ClassifyParams(model_path=model_path, model_type="fasttext", min_score=0.5))
    spark_turn = spark_stage(spark, docs, stage)

    results = {}
    for name, loop in (("per-document loop", per_document), ("batched loop", batched)):
        results[name] = best_of(f"{name} vs spark", n, args.repeat, loop, spark_turn)
    def unchanged(batches):
        import etl  # noqa: F401  (as every task of a Kiln stage does: its worker then skips a per-task cost)

        return batches

    identity = docs.mapInArrow(unchanged, docs.schema)
    identity.write.format("noop").mode("overwrite").save()
    floor_s, floor_cpu = timed(lambda: identity.write.format("noop").mode("overwrite").save())
    from pyspark.sql import functions as F

    @F.pandas_udf("double")
    def text_length(texts: pd.Series) -> pd.Series:  # only the text goes to Python, a number comes back
        import etl  # noqa: F401

        return texts.str.len().astype("float64")

    one_way = docs.withColumn("score", text_length("text"))
    one_way.write.format("noop").mode("overwrite").save()
    one_way_s, one_way_cpu = timed(lambda: one_way.write.format("noop").mode("overwrite").save())
    print(f"\n{'baseline':18s} {'loop docs/s':>12s} {'spark docs/s':>13s} {'spark/loop':>11s} {'loop CPU':>9s} "
          f"{'spark CPU':>10s} {'spark/loop, own cores':>22s}")
    for name, ((loop_s, loop_cpu), (spark_s, spark_cpu)) in results.items():
        print(f"{name:18s} {n / loop_s:12,.0f} {n / spark_s:13,.0f} {loop_s / spark_s:10.2f}x "
              f"{1e6 * loop_cpu / n:6.0f} us {1e6 * spark_cpu / n:7.0f} us {args.cores * loop_cpu / spark_cpu:21.2f}x")
    print("(CPU: per document, of the whole process tree: the driver, Spark's JVM and its Python workers)")
    print(f"identity mapInArrow, no model: {n / floor_s:,.0f} docs/s, {1e6 * floor_cpu / n:.0f} us CPU/doc")
    print(f"pandas_udf on the text alone, no model: {n / one_way_s:,.0f} docs/s, {1e6 * one_way_cpu / n:.0f} us CPU/doc")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
