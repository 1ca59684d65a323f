"""The training engine and what a training writes: batches and augmentation, optimiser and
one-cycle schedule, device and precision, the loop; checkpoints, history and resume states."""
