"""How each stage's cost grows with the corpus: the demo pipeline over 10k, 100k and 1M documents.

    .venv/bin/python bench/scale_curve.py [--sizes 10000 100000 1000000] [--work /tmp/kiln-scale]
        [--project-docs 1e9 --project-cores 512]

For each size the demo's corpus generator (jobs/demo.py `build_corpus`: fixture prose of realistic
length with 2% planted bad lines and duplicate groups, 3% mojibake, junk; plus near duplicates,
documents with personal data and abusive ones, each at 1% of the size, an evaluation set leaked into
it, a small crawl) writes the inputs, and `python -m etl run` runs configs/demo_pipeline.yaml's stage
list over them, as typed, in a subprocess on Spark local[2]. The demo tokenizer is trained once, on the
smallest corpus. While the job runs, its process tree is sampled every 0.5 s from /proc:

  wall     per stage, as the pipeline reports it (its progress lines), and for the whole command
  CPU      per stage: the tree's CPU seconds (driver, JVM, Python workers) between two progress lines
           (ingest's includes the session's start)
  memory   peak resident memory of the driver (the Python process), the JVM and the Python workers

The cost exponent k (time ~ docs^k) is fitted per stage between each pair of sizes and by least
squares over all of them; the curves are drawn on log-log axes (PNG). At small sizes a stage's fixed
cost (Spark jobs, Delta commits) hides its growth, so k means most between the largest sizes. The
marginal cost per document is the slope between the two largest sizes; the projection to
`--project-docs` documents is that slope times the documents, divided by the cores
(`--project-cores` / 2): it assumes each stage grows linearly from there and scales out linearly
across a cluster, a planning figure, not a measurement. Results go to <work>/scale_curve.json (with
`--reuse`, sizes already there are not run again, so a 1M run can be added later) and
<work>/scale_curve.png. The 1M-document run writes about 20 GB of Delta tables: check the disk first.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.process_tree import TreeSampler  # noqa: E402

STEP_LINE = re.compile(r"^\[\s*(\S+)\]\s+([\d,]+) in ->\s+([\d,]+) kept\s+\(([\d.]+)s\)")


def prepare(size: int, work: Path, tokenizer: Path | None) -> tuple[Path, Path]:
    """The corpus of `size` documents under work/n<size>, and the pipeline config that reads it."""
    from jobs.demo import build_corpus, train_tokenizer

    out = work / f"n{size}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    _, _, texts = build_corpus(out, n_docs=size, planted=max(12, size // 100))
    if tokenizer is None:
        tokenizer = train_tokenizer(texts, work)
    print(f"{size:,} documents: corpus written in {time.perf_counter() - start:.0f} s", flush=True)
    text = (ROOT / "configs" / "demo_pipeline.yaml").read_text()
    config = yaml.safe_load(text.replace("demo_out/tokenizer", str(tokenizer)).replace("demo_out/", f"{out}/"))
    config["report"] = False  # the report is a fixed cost per run, not part of any stage's curve
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, tokenizer


def run_once(config: Path) -> dict:
    """`python -m etl run CONFIG`, sampled; per stage wall and CPU seconds, peaks, total wall."""
    env = {**os.environ, "KILN_SPARK_MASTER": "local[2]", "KILN_PROGRESS_SECONDS": "3600"}
    start = time.perf_counter()
    errors = open(config.parent / "stderr.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "etl", "run", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=errors, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stages, cpu_before, lines = {}, 0.0, []
    for line in proc.stdout:
        lines.append(line)
        match = STEP_LINE.match(line)
        if match:
            cpu_now = sampler.sample()
            name, docs_in, _, seconds = match.groups()
            stages[name] = {"docs_in": int(docs_in.replace(",", "")), "wall_s": float(seconds),
                            "cpu_s": round(cpu_now - cpu_before, 1)}
            cpu_before = cpu_now
    proc.wait()
    errors.close()
    sampler.stopped = True
    if proc.returncode != 0:
        sys.exit(f"etl run failed ({proc.returncode}):\n{''.join(lines[-30:])}\n(stderr: {errors.name})")
    return {"wall_s": round(time.perf_counter() - start, 1), "stages": stages,
            "peak_gib": {k: round(v / 2**30, 2) for k, v in sampler.peak.items()}}


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-3)) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(s) for s in results)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    stages = list(results[str(sizes[0])]["stages"])
    colors = plt.get_cmap("tab20").colors
    for i, stage in enumerate(stages):
        ax.plot(sizes, [results[str(s)]["stages"][stage]["wall_s"] for s in sizes], marker="os^Dv"[i % 5],
                color=colors[(2 * i) % 20 if i < 10 else 2 * (i - 10) + 1], label=stage)
    first = max(results[str(sizes[0])]["stages"][s]["wall_s"] for s in stages)
    ax.plot(sizes, [first * s / sizes[0] for s in sizes], "k--", linewidth=0.8, label="k = 1 (linear)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("stage wall seconds (Spark local[2])")
    ax.set_title("Kiln demo pipeline: cost per stage against corpus size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", default="/tmp/kiln-scale")
    parser.add_argument("--project-docs", type=float, default=1e9)
    parser.add_argument("--project-cores", type=int, default=512, help="the cluster's cores (e.g. 32 nodes x 16)")
    parser.add_argument("--reuse", action="store_true", help="keep the sizes <work>/scale_curve.json already has")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free / 2**30
    print(f"sizes {args.sizes}; {os.cpu_count()} CPUs; {free:.0f} GiB free under {work}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    saved = work / "scale_curve.json"
    results = json.loads(saved.read_text()) if args.reuse and saved.exists() else {}
    tokenizer = work / "tokenizer" if (work / "tokenizer").exists() and results else None
    for size in sorted(args.sizes):
        if str(size) in results:
            continue
        config, tokenizer = prepare(size, work, tokenizer)
        results[str(size)] = run_once(config)
        r = results[str(size)]
        print(f"  {size:,}: {r['wall_s']} s whole command; peaks (GiB) {r['peak_gib']}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        saved.write_text(json.dumps(results, indent=1))

    sizes = sorted(int(s) for s in results)
    if len(sizes) < 2:
        return
    stages = list(results[str(sizes[0])]["stages"])
    head = ("| stage | " + " | ".join(f"{s:,} docs: wall s (CPU s)" for s in sizes)
            + " | k per step | k fit | marginal ms/doc (2 cores) |")
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    projection = {}
    for stage in stages:
        walls = [results[str(s)]["stages"][stage]["wall_s"] for s in sizes]
        cells = [f"{w:.1f} ({results[str(s)]['stages'][stage]['cpu_s']:.0f})" for s, w in zip(sizes, walls)]
        steps = [math.log(max(b, 1e-3) / max(a, 1e-3)) / math.log(nb / na)
                 for (na, a), (nb, b) in zip(zip(sizes, walls), zip(sizes[1:], walls[1:]))]
        marginal = max(walls[-1] - walls[-2], 0.0) / (sizes[-1] - sizes[-2])
        projection[stage] = marginal * args.project_docs / (args.project_cores / 2)
        print(f"| {stage} | " + " | ".join(cells) + f" | {', '.join(f'{x:.2f}' for x in steps)} | "
              f"{exponent(sizes, walls):.2f} | {1000 * marginal:.3f} |")
    hours = sum(projection.values()) / 3600
    print(f"\nprojection to {args.project_docs:,.0f} documents on {args.project_cores} cores (each stage at its "
          f"marginal cost per document, linear scale-out assumed): {hours:,.1f} hours; by stage (h): "
          + ", ".join(f"{s} {v / 3600:.2f}" for s, v in sorted(projection.items(), key=lambda kv: -kv[1])))
    plot(results, work / "scale_curve.png")
    print(f"plot: {work / 'scale_curve.png'}")


if __name__ == "__main__":
    main()
