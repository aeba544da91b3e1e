"""The report as one self-contained HTML page (images inline, no script, no network), from the same
data as its JSON twin. Laid out for reading at 1400 px: long words and ids wrap, wide tables scroll
inside their own box, images never exceed the column."""
from __future__ import annotations

import base64
import html
import json
import shlex

from ..delta import sql_name
from ..paths import join_path
from .collect import MINHASH

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1300px;padding:0 16px;color:#222}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}p.meta{color:#555;margin-top:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #d8d8d8;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f4f4f4}
td.l,th.l{text-align:left;white-space:nowrap}td.w,th.w{text-align:left;min-width:16em}tr.total td{font-weight:600;background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.warn{background:#fff1ef;border:1px solid #e4a39a;border-radius:6px;padding:8px 14px}.warn li{margin:3px 0}
.ok{background:#eef8ee;border:1px solid #9fcf9f;border-radius:6px;padding:8px 14px}
.ex{border:1px solid #e2e2e2;border-radius:6px;padding:6px 10px;margin:6px 0;background:#fcfcfc}
.ex .head{font-size:12px;color:#555;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0;font-size:12px;max-height:12em;overflow-y:auto}
code{font-size:12px;background:#f2f2f2;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px}.exs{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:8px}.up{color:#1a7f37}.down{color:#b42318}
nav a{margin-right:12px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _n(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.4g}" if isinstance(value, float) else _e(value)


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _tokens(value: int | None, exact: bool) -> str:
    """A token count; ``~`` marks one estimated from characters (before tokenize)."""
    return _n(value) if exact or not value else f"~{value:,}"


def _table(head: list[str], rows: list[list[str]], left: int = 1, wrap: tuple[int, ...] = ()) -> str:
    """Cells are HTML already; the first ``left`` columns are names (left-aligned, never broken), the
    rest numbers; the columns in ``wrap`` hold prose (left-aligned, wrapped)."""
    def cell(i: int, c: str, tag: str) -> str:
        kind = " class='w'" if i in wrap else " class='l'" if i < left else ""
        return f"<{tag}{kind}>{c}</{tag}>"

    th = "".join(cell(i, h, "th") for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell(i, c, "td") for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><tr>{th}</tr>{body}</table></div>"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def more_command(example: dict, output: str) -> str:
    """The command that shows more of a rejected document like this one."""
    out = shlex.quote(output)
    if example["stage"] == MINHASH:
        return f"python -m etl dedup-explain {out} {shlex.quote(example['id'])}"
    notebook = ("01_raw_corpus" if example["stage"] == "ingest" else "02_dedup_clusters" if example["stage"] == "exact_dedup"
                else "03_pii_toxicity" if example["zone"] == "curated" else None)
    if notebook:
        return f"python -m notebooks.run notebooks/{notebook}.py --param OUTPUT={out}"
    table = "rejected" if example["zone"] == "raw" else "rejected_curated"
    return (f"spark.sql(\"SELECT id, detail, text FROM {sql_name(join_path(output, table))} "
            f"WHERE stage = '{example['stage']}' AND reason = '{example['reason']}'\")")


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, (int, float, str)) for v in value):
        return [(prefix, ", ".join(_n(v) for v in value))]
    if isinstance(value, list):
        return [(prefix, json.dumps(value))]
    return [(prefix, value)]


def _warnings(report: dict) -> str:
    if not report["warnings"]:
        return "<div class='ok'>No warnings: no stage removed more than its share, no source lost everything, " \
               "the dataset's token count held steady.</div>"
    return "<div class='warn'><b>Warnings</b><ul>" + "".join(f"<li>{_e(w['message'])}</li>" for w in report["warnings"]) + "</ul></div>"


def _funnel(report: dict, plots: dict) -> str:
    steps = report["steps"]
    flagged = {w["stage"] for w in report["warnings"] if w["kind"] == "stage_removed_most"}

    def removed(s: dict) -> str:
        share = _pct(s["docs_in"] - s["docs_out"], s["docs_in"])
        return f"<b class='down'>{share}</b>" if s["stage"] in flagged else share

    rows = [[_e(s["stage"]), _n(s["docs_in"]), _n(s["docs_out"]), removed(s),
             _n(s["chars_in"]), _n(s["chars_out"]), _tokens(s["tokens_out"], s["tokens_exact"]), f"{s['seconds']:.1f}"] for s in steps]
    table = _table(["stage", "docs in", "docs out", "removed", "chars in", "chars out", "tokens out", "seconds"], rows)
    return f"<h2 id='funnel'>Funnel</h2><p>Tokens marked ~ are estimated (see per source).</p>{table}{_img(plots['funnel'], 'documents per stage')}"


def _sources(report: dict, plots: dict) -> str:
    rows = []
    for r in report["by_source"]:
        rejected = ", ".join(f"{_e(k)}: {v:,}" for k, v in r["rejected"].items()) or "-"
        rows.append([_e(r["stage"]), _e(r["source"]), _n(r["docs_in"]), _n(r["docs_out"]), _pct(r["docs_in"] - r["docs_out"], r["docs_in"]),
                     _n(r["chars_in"]), _n(r["chars_out"]), _tokens(r["tokens_in"], r["tokens_exact"]), _tokens(r["tokens_out"], r["tokens_exact"]),
                     rejected])
    head = ["stage", "source", "docs in", "docs out", "removed", "chars in", "chars out", "tokens in", "tokens out", "rejected (reason: documents)"]
    table = _table(head, rows, left=2, wrap=(len(head) - 1,))
    return (f"<h2 id='sources'>Per source</h2><p>What each source kept and lost at every stage. Tokens marked ~ are "
            f"estimated from the source's characters per token at tokenize.</p>{_img(plots['sources'], 'per source')}{table}")


def _examples(report: dict) -> str:
    """Per (stage, reason): a heading with the count, then its examples side by side."""
    if not report["examples"]:
        return ""
    counts = {(s["stage"], reason): n for s in report["steps"] for reason, n in s["rejected"].items()}
    groups: dict[tuple[str, str], list[dict]] = {}
    for ex in report["examples"]:
        groups.setdefault((ex["stage"], ex["reason"]), []).append(ex)
    parts = []
    for (stage, reason), examples in groups.items():
        n = counts.get((stage, reason), 0)
        cards = "".join(
            f"<div class='ex'><div class='head'><b>{_e(ex['id'])}</b> ({_e(ex['source'])}, {ex['chars']:,} chars, "
            f"{'redacted by the pii engine' if ex['zone'] == 'raw' else 'as the pii stage left it'})"
            f"{' &middot; ' + _e(ex['detail']) if ex['detail'] else ''}</div><pre>{_e(ex['text'])}</pre></div>"
            for ex in examples)
        parts.append(f"<h3>{_e(stage)} &middot; {_e(reason)} &middot; {n:,} document{'' if n == 1 else 's'}</h3>"
                     f"<div class='exs'>{cards}</div><div class='head'>more: <code>{_e(more_command(examples[0], report['output']))}</code></div>")
    return "<h2 id='examples'>Why documents were removed: examples</h2>" + "".join(parts)


def _scores(plots: dict) -> str:
    if not plots["scores"]:
        return ""
    body = "".join(f"<h3>{_e(stage)}</h3>{_img(png, stage + ' scores')}" for stage, png in plots["scores"].items())
    return ("<h2 id='scores'>Scores: kept against rejected</h2><p>For every scored rule: the documents the stage kept, "
            "those this rule rejected and those another rule of the stage rejected, with the configured thresholds dashed. "
            f"The y axis is logarithmic past 1 so a handful of rejected documents stays visible.</p>{body}")


def _dedup(report: dict, plots: dict) -> str:
    dedup = report["dedup"]
    if dedup is None:
        return ""
    rows = [[_e(c["cluster_id"]), _e(c["kept_id"]), _n(c["documents"]), f"{c['min_similarity']:.3f}"] for c in dedup["largest"]]
    pairs = "".join(
        f"<h3>similarity {p['similarity']:.3f}</h3><div class='pair'>"
        f"<div class='ex'><div class='head'><b>{_e(p['removed_id'])}</b> (removed)</div><pre>{_e(p['removed_text'])}</pre></div>"
        f"<div class='ex'><div class='head'><b>{_e(p['kept_id'])}</b> (kept)</div><pre>{_e(p['kept_text'])}</pre></div></div>"
        f"<div class='head'>more: <code>{_e(more_command({'stage': MINHASH, 'id': p['removed_id']}, report['output']))}</code></div>"
        for p in dedup["pairs"])
    return (f"<h2 id='dedup'>Near duplicates (minhash_dedup)</h2><h3>Largest clusters</h3>"
            f"{_table(['cluster', 'kept document', 'documents', 'lowest similarity'], rows, left=2)}"
            f"{_img(plots['clusters'], 'cluster sizes') if 'clusters' in plots else ''}"
            f"<h3>The least similar pairs it merged</h3><p>The borderline cases: if these are not duplicates, raise the "
            f"stage's threshold.</p>{pairs}")


def _metrics(report: dict) -> str:
    parts = []
    for step in report["steps"]:
        if step["metrics"]:
            rows = [[_e(k), _n(v) if not isinstance(v, str) else _e(v)] for k, v in flatten(step["metrics"]) if k != "message"]
            parts.append(f"<h3>{_e(step['stage'])}</h3>{_table(['metric', 'value'], rows, left=1, wrap=(1,))}")
    return "<h2 id='metrics'>Stage metrics</h2>" + "".join(parts) if parts else ""


def _comparison(report: dict) -> str:
    comparison = report["comparison"]
    if comparison is None:
        return "<h2 id='compare'>Since the previous run</h2><p>No previous run of this output to compare with.</p>"

    def delta(pair):
        old, new = pair
        if old is None:
            return f"{_n(new)} (new)"
        diff = new - old
        return _n(new) if diff == 0 else f"{_n(new)} <span class='{'up' if diff > 0 else 'down'}'>({diff:+,})</span>"

    rows = []
    for s in comparison["stages"]:
        reasons = "; ".join(f"{_e(r)}: {_n(a)} &rarr; {_n(b)}" for r, (a, b) in s["reasons_changed"].items()) or "-"
        params = "; ".join(f"{_e(k)}: {_e(json.dumps(a))} &rarr; {_e(json.dumps(b))}" for k, (a, b) in s["params_changed"].items()) or "-"
        rows.append([_e(s["stage"]), delta(s["docs_in"]), delta(s["docs_out"]), reasons, params])
    removed = f"<p>Stages no longer run: {_e(', '.join(comparison['stages_removed']))}</p>" if comparison["stages_removed"] else ""
    head = ["stage", "docs in", "docs out", "rejections that changed (before &rarr; now)", "params that changed"]
    return (f"<h2 id='compare'>Since the previous run ({_e(comparison['previous_run_id'])})</h2>"
            f"{_table(head, rows, left=1, wrap=(3, 4))}{removed}")


def _dataset(report: dict) -> str:
    d = report["dataset"]
    if d is None:
        return ""
    previous = (f"; the previous version v={d['previous_version']} held {d['previous_tokens']:,}"
                if d.get("previous_tokens") else "; no previous version")
    weighted = ""
    if d.get("sources"):  # packed by source: what shuffle_and_write.source_weights did to each
        rows = [[_e(name), f"{s['weight']:g}", f"{s['before']:,}", f"{s['after']:,}",
                 f"{s['after'] / max(1, sum(t['after'] for t in d['sources'].values())):.1%}"]
                for name, s in d["sources"].items()]
        weighted = _table(["source", "weight", "tokens before weighting", "tokens in the dataset", "share"], rows)
    return (f"<h2 id='dataset'>Dataset</h2><p>{_e(d['message'])}<br>{d['tokens']:,} tokens in v={d['version']}{previous}.</p>"
            f"{weighted}")


def render(report: dict, plots: dict) -> str:
    """The page. ``plots``: funnel, sources and clusters PNGs, and scores: {stage: PNG}."""
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (("funnel", "funnel"), ("sources", "per source"), ("examples", "examples"),
                                                        ("scores", "scores"), ("dedup", "dedup"), ("metrics", "metrics"),
                                                        ("compare", "previous run")))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Kiln ETL report {_e(report['run_id'])}</title><style>{CSS}</style></head><body>
<h1>Kiln ETL report</h1><p class='meta'>run {_e(report['run_id'])} &middot; output {_e(report['output'])} &middot;
written {_e(report['written_at'])} &middot; JSON twin: report.json</p><nav>{nav}</nav>
{_warnings(report)}{_dataset(report)}{_funnel(report, plots)}{_sources(report, plots)}{_examples(report)}{_scores(plots)}
{_dedup(report, plots)}{_metrics(report)}{_comparison(report)}</body></html>"""
