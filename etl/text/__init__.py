"""Text rules in plain Python and numpy, no Spark: what the document stages apply to each text.

``words`` (datatrove's English word and sentence split), ``quality_rules`` (Gopher and C4),
``minhash`` (signatures and LSH bands), ``pii_entities`` and ``pii_recognizers`` (presidio's
analyzer), ``toxicity_scorers`` (word lists and models). The stages in ``etl.stages`` import them;
nothing here imports a stage, so the benchmarks and tests use the rules without Spark.
"""
