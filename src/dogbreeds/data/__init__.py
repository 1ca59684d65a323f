"""From archives to tensors: sources, merge, split, deformations, robustness sets, the
prepared-split file contract and the one image preprocessing shared with serving."""
