"""dogbreeds: plain, depthwise-separable and deformable CNNs on 7 dog breeds, reproducibly."""

__version__ = "0.1.0"


class DogbreedsError(Exception):
    """An error a user can fix (bad params, bad input file); stage scripts print it as one line."""
