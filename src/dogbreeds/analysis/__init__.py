"""Numbers about trained nets: scores, statistics over seeds, learned offsets, the report and
its figures. No MLflow here."""
