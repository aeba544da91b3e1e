"""Dataset publishing: documents tokenized and packed, then shuffled and written as a versioned MDS dataset.

The document stages (etl/stages/) clean and filter documents; this package turns the documents they
kept into a dataset version. `publish` is the one entry point that `etl run`, `etl refresh` and
`etl erase` share; the YAML still lists ``tokenize`` and ``shuffle_and_write`` among the stages, and
`split_stages` separates them from the document stages.
"""
