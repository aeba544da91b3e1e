"""``eval.loss_by_source``: the eval loss of each source's tokens, beside the overall one.

A packed sample holds documents of several sources, so a sample has no single source: each token gets its
document's source from the eval dataset's provenance table (shards.provenance, at the Delta version its
manifest names, the table ``explain_step`` reads), for the samples the evaluation reads, once at the start.
The loader marks every token with its source's number (``token_sources``, -1 where none is known) and the
evaluation sums the loss per number: the sources' losses, weighted by their token counts, give the overall
eval loss. A position counts for the source of its own token (an EOS for the document it ends).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from shards.config import ConfigError
from shards.manifest import read_manifest, version_path
from shards.mds import MDSReader
from shards.provenance import read_segments

from .exclude import check_traceable
from .order import GlobalOrder
from .sources import Source

KEY = "eval.loss_by_source"


@dataclass(frozen=True)
class SourceTags:
    names: list[str]  # the sources, sorted; a token's number indexes this list
    # Per eval dataset: (bucket, bucket_index) -> [(offset, length, source number)] of the samples evaluated.
    spans: list[dict[tuple[int, int], list[tuple[int, int, int]]]]


def tag_sources(sources: list[Source], order: GlobalOrder, samples_read: int) -> SourceTags:
    """The sources of the tokens of the first ``samples_read`` samples of the eval ``order``."""
    check_traceable(sources, KEY)
    datasets, indices = order.locate(0, samples_read)
    found: list[dict] = []
    for d, source in enumerate(sources):
        where = f"{source.path} v={source.version} ({source.split})"
        reader = MDSReader(source.url)
        rows = (reader[int(i)] for i in indices[datasets == d])
        keys = {(int(r["bucket"]), int(r["bucket_index"])) for r in rows}
        segments = read_segments(read_manifest(version_path(source.path, source.version)), source.split, keys)
        empty = [key for key, found_segments in segments.items() if not found_segments]
        if empty:
            raise ConfigError(f"{KEY}: the provenance table of {where} has no rows for sample {empty[0]}; it does "
                              "not match this dataset version")
        found.append(segments)
    names = sorted({seg.source for segments in found for segs in segments.values() for seg in segs})
    clashing = [name for name in names if sum(metric_name(other) == metric_name(name) for other in names) > 1]
    if clashing:
        raise ConfigError(f"{KEY}: sources {clashing} give the same metric name ({metric_name(clashing[0])!r}); "
                          "MLflow takes letters, digits and '_-. /' only")
    number = {name: i for i, name in enumerate(names)}
    spans = [{key: [(seg.sample_offset, seg.length, number[seg.source]) for seg in segs] for key, segs in segments.items()}
             for segments in found]
    return SourceTags(names, spans)


def per_source(losses: np.ndarray, counts: np.ndarray, names: list[str]) -> dict[str, dict]:
    """``{source: {"loss", "tokens"}}`` from the summed losses and token counts per source number."""
    return {name: {"loss": float(losses[i] / counts[i]), "tokens": int(counts[i])}
            for i, name in enumerate(names) if counts[i]}


def metric_name(source: str) -> str:
    """``source`` as MLflow takes it in a metric name (letters, digits, ``_-. /``; anything else becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", source)


def mixture_names(sources: list[Source]) -> list[str]:
    """A metric name for each dataset of a mixture (``tokens/<name>``): its source, else its path; the position
    added where two agree."""
    names = [metric_name(s.source or s.path) for s in sources]
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]
