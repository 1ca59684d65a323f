"""Stage functions that combine layers and write what DVC tracks: train, evaluate."""
