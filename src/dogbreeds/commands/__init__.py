"""Commands outside the DVC pipeline (`python -m dogbreeds <command>`): bench, compare, grid,
predict, quickstudy, register, snapshot, summary."""
