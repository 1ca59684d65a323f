"""The stages `dvc repro` would run, spread over a Dask cluster (`python -m dogbreeds cluster`)."""
