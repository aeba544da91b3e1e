"""Kiln's data side: a Spark + Delta Lake pipeline from raw files to MDS shards."""
