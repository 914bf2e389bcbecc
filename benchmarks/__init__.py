"""Side-by-side benchmarks of diffopt against the peer packages.

Run ``python -m benchmarks --help``; see ``benchmarks/README.md``.
"""
