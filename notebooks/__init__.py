"""Databricks source notebooks for looking at Kiln's outputs, and `notebooks.run` to run them locally."""
