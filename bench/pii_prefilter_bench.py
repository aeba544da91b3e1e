"""The `pii` stage with its pre-filter against a plain presidio loop, on a corpus where 10% of the
documents hold an entity.

Corpus: prose documents of about 1-3 KB from the standard library's docstrings (as the demo corpus),
a tenth of them with one PII value of the labelled set (etl.devtools.pii_eval: e-mail, phone, card,
IBAN, IP, SSN, URL with credentials, secret), and a fifth of the others (`--lookalike-share`) with
a look-alike (a date, version, order number, ISBN, bad-Luhn card number, price or time), which the
pre-filter cannot always tell from a number worth a look. Sides, on the same texts, in turns, in the same run:

  loop              presidio's AnalyzerEngine + AnonymizerEngine called document by document in one
                    Python process, with the stage's recognisers (as bench/pii_toxicity_bench.py)
  stage             the pii stage on Spark local[N] (noop writer, after a warm-up), pre-filter on
  stage, no filter  the same with `prefilter: false`
  redactor          the stage's pure-Python path (PiiRedactor.process) in this process, pre-filter on:
                    the same single core as the loop

Before timing, the stage's output (text, reason, detail, entity counts per document) is collected
with and without the pre-filter and must be equal, and equal to the loop's texts.

    .venv/bin/python bench/pii_prefilter_bench.py [--docs 10000] [--repeat 2] [--cores 2]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pii_toxicity_bench import spark_stage, timed  # noqa: E402  (this folder: bench/)


def make_corpus(n: int, seed: int = 3, entity_share: float = 0.1, lookalike_share: float = 0.2) -> tuple[list[str], int]:
    """`n` documents, `entity_share` of them holding one PII value and `lookalike_share` of the others a
    look-alike; also how many hold a PII value."""
    from etl.devtools.fixtures import prose_sentences
    from etl.devtools.pii_eval import GENERATORS, LOOKALIKE_KIND_TEMPLATES, LOOKALIKE_KINDS, PII_TEMPLATES

    rng = random.Random(seed)
    sentences = prose_sentences()
    texts, with_entity = [], 0
    for _ in range(n):
        parts = [" ".join(rng.sample(sentences, rng.randint(4, 8))) for _ in range(rng.randint(2, 4))]
        if rng.random() < entity_share:
            entity = rng.choice(list(GENERATORS))
            parts.insert(rng.randint(0, len(parts)), rng.choice(PII_TEMPLATES[entity]).format(v=GENERATORS[entity](rng)))
            with_entity += 1
        elif rng.random() < lookalike_share:
            kind = rng.choice(list(LOOKALIKE_KINDS))
            parts.insert(rng.randint(0, len(parts)), rng.choice(LOOKALIKE_KIND_TEMPLATES).format(v=LOOKALIKE_KINDS[kind](rng)))
        texts.append("\n\n".join(parts))
    return texts, with_entity


def loop_presidio(texts: list[str]):
    """presidio document by document, the stage's recognisers and actions; returns (timing, texts)."""
    from presidio_anonymizer import AnonymizerEngine

    from etl.stages.pii import PiiParams, PiiRedactor
    from etl.text.pii_recognizers import resolve_overlaps

    redactor = PiiRedactor(PiiParams(prefilter=False), None)
    analyzer, anonymizer, operators = redactor.batch_analyzer.analyzer_engine, AnonymizerEngine(), redactor.operators
    entities = PiiParams().entity_types
    out: list[str] = []

    def run():
        out.clear()
        for text in texts:
            found = resolve_overlaps(analyzer.analyze(text, language="en", entities=entities))
            out.append(anonymizer.anonymize(text=text, analyzer_results=found, operators=operators).text if found else text)

    return timed(run), list(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="time each side this many times, keep the best")
    parser.add_argument("--lookalike-share", type=float, default=0.2,
                        help="share of the documents without PII that hold a look-alike (0: plain prose)")
    args = parser.parse_args()
    os.environ.setdefault("KILN_SPARK_MASTER", f"local[{args.cores}]")
    os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))

    from etl.spark import get_spark
    from etl.stages.base import StageContext
    from etl.stages.pii import Pii, PiiParams, PiiRedactor

    texts, with_entity = make_corpus(args.docs, lookalike_share=args.lookalike_share)
    n = len(texts)
    redactor = PiiRedactor(PiiParams(), None)
    passed = sum(redactor.prefilter.might_hold(t) for t in texts)
    print(f"{n} documents, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB, {with_entity} with an entity; "
          f"the pre-filter sends {passed} ({passed / n:.1%}) to presidio. {os.cpu_count()} CPUs, Spark local[{args.cores}], "
          f"best of {args.repeat}; load average {os.getloadavg()[0]:.1f}", flush=True)

    spark = get_spark("kiln-bench-pii-prefilter")
    docs = spark.createDataFrame(
        [(f"d{i:07d}", "bench", t, "h", None) for i, t in enumerate(texts)],
        "id string, source string, text string, content_hash string, meta map<string,string>",
    ).repartition(args.cores * 4).cache()
    docs.count()
    stages = {"stage": Pii(PiiParams()), "stage, no filter": Pii(PiiParams(prefilter=False))}

    ctx = StageContext(spark, "", "", "bench")
    outputs = {}
    for name, stage in stages.items():
        rows = stage.run(docs, ctx).docs.select("id", "text", "reason", "detail", "pii_entities").collect()
        outputs[name] = sorted((r["id"], r["text"], r["reason"], r["detail"], sorted(r["pii_entities"].items())) for r in rows)
    (loop_time, loop_texts) = loop_presidio(texts)
    assert outputs["stage"] == outputs["stage, no filter"], "the pre-filter changed the stage's output"
    assert [row[1] for row in outputs["stage"]] == loop_texts, "the stage's texts differ from the presidio loop's"
    print(f"outputs: stage with and without the pre-filter equal over {n} documents, and equal to the loop's texts")

    best = {"loop": loop_time}
    timers = {name: spark_stage(spark, docs, stage) for name, stage in stages.items()}
    timers["redactor"] = lambda: timed(lambda: redactor.process(texts))
    timers["loop"] = lambda: loop_presidio(texts)[0]
    for turn in range(args.repeat):
        line = []
        for name, timer in timers.items():
            wall, cpu = timer()
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
            line.append(f"{name} {n / wall:,.0f} docs/s")
        print(f"  turn {turn + 1}: " + ", ".join(line) + f"; load average {os.getloadavg()[0]:.1f}", flush=True)

    loop_s = best["loop"][0]
    print(f"\n{'side':18s} {'docs/s':>9s} {'vs loop':>8s} {'CPU/doc':>9s}")
    for name in ("loop", "stage", "stage, no filter", "redactor"):
        wall, cpu = best[name]
        print(f"{name:18s} {n / wall:9,.0f} {loop_s / wall:7.2f}x {1000 * cpu / n:6.2f} ms")
    print("(CPU: per document, of this process and the ones below it: Spark's JVM and Python workers)")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
