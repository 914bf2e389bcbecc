"""Dtype rules shared by every family."""

__all__ = ["HALF", "compute_dtype"]

#: Half-precision dtype names: their squares overflow early (float16 above 256) and their
#: sums count exactly only up to 2048, so reductions and draws are made in float32.
HALF = ("float16", "bfloat16")


def compute_dtype(dtype):
    """The dtype to accumulate (or draw) in for data of ``dtype``: float32 for half precision."""
    return "float32" if dtype in HALF else dtype
