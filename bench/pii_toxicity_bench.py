"""Throughput of the `language`, `pii` and `toxicity` stages on Spark against plain Python loops.

For each stage: the same texts, the same configuration, in the same run:
  loop   the library called document by document in one Python process (presidio's AnalyzerEngine
         + AnonymizerEngine, the word-list scorer, py3langid), engines built beforehand;
  spark  the stage's DataFrame on local[N] Spark, forced with the `noop` writer, after a warm-up
         pass before each turn (Python workers are reused, so the engines are built beforehand).
Besides documents/s, the CPU seconds per document of the whole process tree (driver, Spark's JVM and
Python workers): on a machine shared with other jobs a side's docs/s depends on how much CPU the
others leave it, its CPU per document much less; `cores x loop CPU / Spark CPU` is the ratio when
each side has its cores to itself.
For `pii` also datatrove 0.10.1's PIIFormatter (regular expressions for e-mail and IPv4 only) in a
loop, from its own virtualenv (.cache/venv-datatrove, made by scripts/side_install_datatrove.sh).

    .venv/bin/python bench/pii_toxicity_bench.py [--docs 20000] [--stages pii] [--cores 2]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATATROVE_PYTHON = ROOT / ".cache" / "venv-datatrove" / "bin" / "python"
DATATROVE_LOOP = """
import json, sys, time
from datatrove.pipeline.formatters import PIIFormatter
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
formatter = PIIFormatter()
start = time.perf_counter()
for text in texts:
    formatter.format(text)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def make_texts(n: int, seed: int = 5) -> list[str]:
    """Documents of roughly 1-4 KB: labelled PII sentences, look-alikes and filler, some toxic lines."""
    from etl.devtools.pii_eval import FILLER, generate

    rng = random.Random(seed)
    pieces = [d.text for d in generate(n_per_type=max(n // 8, 10), n_lookalike_docs=n, seed=seed)]
    insults = ["You are a pathetic idiot.", "Shut up, moron.", "What a stupid waste of space."]
    texts = []
    for _ in range(n):
        parts = rng.sample(pieces, rng.randint(2, 6)) + rng.sample(FILLER, 6) * rng.randint(1, 3)
        if rng.random() < 0.1:
            parts.append(rng.choice(insults))
        rng.shuffle(parts)
        texts.append(" ".join(parts))
    return texts


def tree_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by each live process below this one (Spark's JVM and Python workers),
    with what the children it waited for used."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        parent[int(pid)], used[int(pid)] = int(fields[1]), sum(int(f) for f in fields[11:15]) / tick

    def below_us(pid: int) -> bool:
        while pid > 1 and pid != os.getpid():
            pid = parent.get(pid, 1)
        return pid == os.getpid()

    return {pid: t for pid, t in used.items() if pid != os.getpid() and below_us(pid)}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the ones below it) of one call. Each process
    counts from where it stood before the call, or from zero if it started during it; one that
    exits during the call takes its share along (Spark's daemon does not wait for its workers)."""
    wall, own, tree = time.perf_counter(), time.process_time(), tree_cpu_seconds()
    fn()
    below = sum(t - tree.get(pid, 0.0) for pid, t in tree_cpu_seconds().items())
    return time.perf_counter() - wall, time.process_time() - own + below


def best_of(name: str, n: int, repeats: int, loop, spark) -> tuple[tuple[float, float], tuple[float, float]]:
    """Loop and Spark timed in turns, the best wall time and CPU time of each kept: on a shared
    machine the fastest run is the least disturbed one, and taking turns exposes both sides to the
    same background load. Every turn is printed with the load average, so a disturbed one shows."""
    loop_best = spark_best = (float("inf"), float("inf"))
    for turn in range(repeats):
        (loop_s, loop_cpu), (spark_s, spark_cpu) = loop(), spark()
        print(f"  {name} turn {turn + 1}: loop {n / loop_s:,.0f} docs/s ({1000 * loop_cpu / n:.2f} ms CPU/doc), "
              f"spark {n / spark_s:,.0f} docs/s ({1000 * spark_cpu / n:.2f} ms CPU/doc), {loop_s / spark_s:.2f}x; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        loop_best = (min(loop_best[0], loop_s), min(loop_best[1], loop_cpu))
        spark_best = (min(spark_best[0], spark_s), min(spark_best[1], spark_cpu))
    return loop_best, spark_best


def loop_pii(texts: list[str]) -> float:
    from presidio_anonymizer import AnonymizerEngine

    from etl.text.pii_recognizers import resolve_overlaps
    from etl.stages.pii import PiiParams, PiiRedactor

    redactor = PiiRedactor(PiiParams(), None)
    analyzer, anonymizer, operators = redactor.batch_analyzer.analyzer_engine, AnonymizerEngine(), redactor.operators
    entities = PiiParams().entity_types

    def run():
        for text in texts:
            found = resolve_overlaps(analyzer.analyze(text, language="en", entities=entities))
            if found:
                anonymizer.anonymize(text=text, analyzer_results=found, operators=operators)

    return timed(run)


def loop_toxicity(texts: list[str]) -> float:
    from etl.text.toxicity_scorers import WordListScorer

    scorer = WordListScorer.with_lists()
    return timed(lambda: [scorer.score([t], ["en"]) for t in texts])


def loop_profanity_check(texts: list[str]) -> float:
    from etl.text.toxicity_scorers import ProfanityCheckScorer

    scorer = ProfanityCheckScorer()
    return timed(lambda: scorer.score(texts, ["en"] * len(texts)))


def loop_language(texts: list[str]) -> float:
    from etl.stages.language import LanguageParams, identify

    params = LanguageParams()
    return timed(lambda: [identify([t], params) for t in texts])


def loop_datatrove(texts: list[str]) -> float | None:
    if not DATATROVE_PYTHON.exists():
        print("datatrove venv missing: run scripts/side_install_datatrove.sh to include it")
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    try:
        out = subprocess.run([str(DATATROVE_PYTHON), "-c", DATATROVE_LOOP, handle.name],
                             capture_output=True, text=True, check=True)
    finally:
        os.unlink(handle.name)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def spark_stage(spark, docs, stage):
    """A function timing the stage over `docs` once, after a warm-up."""
    from etl.stages.base import StageContext

    ctx = StageContext(spark, "", "", "bench")

    def run(frame):
        stage.run(frame, ctx).docs.write.format("noop").mode("overwrite").save()

    def turn():
        # Warm-up: Spark ends Python workers idle for a minute (as they are while the loop runs), so
        # before each turn the workers start and build their engines, as the loop's are built.
        run(docs.sample(fraction=0.02, seed=1))
        return timed(lambda: run(docs))

    return turn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="time each side this many times, keep the best")
    parser.add_argument("--stages", nargs="+", default=["language", "pii", "toxicity"],
                        choices=["language", "pii", "toxicity"])
    args = parser.parse_args()
    os.environ.setdefault("KILN_SPARK_MASTER", f"local[{args.cores}]")
    os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))

    from etl.spark import get_spark
    from etl.stages.language import Language, LanguageParams
    from etl.stages.pii import Pii, PiiParams
    from etl.stages.toxicity import Toxicity, ToxicityParams

    texts = make_texts(args.docs)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {megabytes:.1f} MB; {os.cpu_count()} CPUs, Spark local[{args.cores}], "
          f"best of {args.repeat}; load average {os.getloadavg()[0]:.1f}")

    spark = get_spark("kiln-bench-pii")
    rows = [(f"d{i}", "bench", t, "h", None, "en") for i, t in enumerate(texts)]
    docs = spark.createDataFrame(
        rows, "id string, source string, text string, content_hash string, meta map<string,string>, language string"
    ).repartition(args.cores * 4).cache()
    docs.count()

    results = []
    for name, loop, stage in [
        ("language", loop_language, Language(LanguageParams())),
        ("pii", loop_pii, Pii(PiiParams())),
        ("toxicity", loop_toxicity, Toxicity(ToxicityParams())),
    ]:
        if name not in args.stages:
            continue
        results.append((name, *best_of(name, len(texts), args.repeat, lambda: loop(texts), spark_stage(spark, docs, stage))))
    profanity_s = loop_profanity_check(texts)[0] if "toxicity" in args.stages else None
    datatrove_s = loop_datatrove(texts) if "pii" in args.stages else None

    n = len(texts)
    print(f"\n{'stage':10s} {'loop docs/s':>12s} {'spark docs/s':>13s} {'spark/loop':>11s} {'loop CPU':>9s} {'spark CPU':>10s} "
          f"{'spark/loop, own cores':>22s}")
    for name, (loop_s, loop_cpu), (spark_s, spark_cpu) in results:
        # With its cores to itself a side runs at cores / CPU per document (the loop uses one core).
        print(f"{name:10s} {n / loop_s:12,.0f} {n / spark_s:13,.0f} {loop_s / spark_s:10.2f}x "
              f"{1000 * loop_cpu / n:6.2f} ms {1000 * spark_cpu / n:7.2f} ms {args.cores * loop_cpu / spark_cpu:21.2f}x")
    print("(CPU: per document, of the whole process tree: the driver, Spark's JVM and its Python workers)")
    print(f"load average now {os.getloadavg()[0]:.1f}")
    if profanity_s is not None:
        print(f"{'alt-profanity-check loop':24s} {n / profanity_s:12,.0f}   (batched predict_prob, 1 process)")
    if datatrove_s is not None:
        pii_spark_s = next(spark[0] for name, _, spark in results if name == "pii")
        print(f"{'datatrove PIIFormatter':24s} {n / datatrove_s:12,.0f}   (e-mail + IPv4 regexes only; "
              f"Kiln pii on Spark is {datatrove_s / pii_spark_s:.2f}x its speed)")


if __name__ == "__main__":
    main()
