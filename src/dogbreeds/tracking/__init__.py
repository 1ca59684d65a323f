"""MLflow: the store, one run per training, and the data lineage logged with it."""
