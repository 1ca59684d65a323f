"""The report's three nets (cnn, dsc, deformable) and their sizes: `build_model`, `net_size`."""
