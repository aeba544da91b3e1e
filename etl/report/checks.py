"""What the report warns about, and what changed since the previous run of the same output. Pure
functions over the report's plain data (no Spark), so they read and test like a table."""
from __future__ import annotations

from ..config import ReportConfig


def warnings(steps: list[dict], by_source: list[dict], dataset: dict | None, config: ReportConfig) -> list[dict]:
    """Each warning: its kind, the stage or source it is about, and one sentence saying what happened."""
    found = []
    for step in steps:
        removed = step["docs_in"] - step["docs_out"]
        if step["docs_in"] and removed / step["docs_in"] > config.max_stage_removal:
            found.append({"kind": "stage_removed_most", "stage": step["stage"], "share": round(removed / step["docs_in"], 4),
                          "message": f"{step['stage']} removed {removed:,} of {step['docs_in']:,} documents "
                                     f"({removed / step['docs_in']:.0%}; report.max_stage_removal is {config.max_stage_removal:.0%})"})
    if by_source:
        first, last = by_source[0]["stage"], by_source[-1]["stage"]
        read = {r["source"]: r["docs_in"] for r in by_source if r["stage"] == first}
        for row in by_source:
            if row["stage"] == last and read.get(row["source"]) and row["docs_out"] == 0:
                lost_at = next(r["stage"] for r in by_source if r["source"] == row["source"] and r["docs_out"] == 0)
                found.append({"kind": "source_lost_everything", "source": row["source"], "stage": lost_at,
                              "message": f"source {row['source']} lost all {read[row['source']]:,} of its documents "
                                         f"(the last ones at {lost_at})"})
    if dataset and dataset.get("previous_tokens"):
        before, after = dataset["previous_tokens"], dataset["tokens"]
        change = (after - before) / before
        if abs(change) > config.max_token_change:
            found.append({"kind": "token_count_moved", "stage": "shuffle_and_write", "share": round(change, 4),
                          "message": f"dataset v={dataset['version']} holds {after:,} tokens, {change:+.0%} against "
                                     f"v={dataset['previous_version']} ({before:,}; report.max_token_change is "
                                     f"{config.max_token_change:.0%})"})
    return found


def compare(current: dict, previous: dict | None) -> dict | None:
    """Per stage, this run's documents in and out against the previous run's, the reasons whose
    counts changed, and the stage params that differ; None without a previous run."""
    if previous is None:
        return None
    before = {s["stage"]: s for s in previous.get("steps", [])}
    params_before = {s["name"]: s.get("params", {}) for s in previous.get("config", {}).get("stages", [])}
    params_now = {s["name"]: s.get("params", {}) for s in current["config"]["stages"]}
    rows = []
    for step in current["steps"]:
        old = before.get(step["stage"])
        reasons = sorted(set(step["rejected"]) | set(old["rejected"] if old else {}))
        changed = {r: [old["rejected"].get(r, 0) if old else None, step["rejected"].get(r, 0)] for r in reasons
                   if not old or old["rejected"].get(r, 0) != step["rejected"].get(r, 0)}
        old_params, new_params = params_before.get(step["stage"], {}), params_now.get(step["stage"], {})
        rows.append({
            "stage": step["stage"], "new_stage": old is None,
            "docs_in": [old["docs_in"] if old else None, step["docs_in"]],
            "docs_out": [old["docs_out"] if old else None, step["docs_out"]],
            "reasons_changed": changed,
            "params_changed": {k: [old_params.get(k), new_params.get(k)] for k in sorted(set(old_params) | set(new_params))
                               if old_params.get(k) != new_params.get(k)} if old else {},
        })
    return {"previous_run_id": previous.get("run_id"), "stages": rows,
            "stages_removed": [name for name in before if name not in {s["stage"] for s in current["steps"]}]}
