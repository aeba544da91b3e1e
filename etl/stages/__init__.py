"""The document stages: each cleans, filters or annotates documents (etl/stages/base.py says how).
etl/load_config.py names them, and the dataset stages (etl/dataset/), for the pipeline config."""
