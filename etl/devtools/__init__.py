"""Development tools, not used by a pipeline run: generated test corpora (`fixtures`: realistic
prose with planted problems) and a labelled PII set with its scoring (`pii_eval`), for the tests,
the benchmarks and the demo."""
