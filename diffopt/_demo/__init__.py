"""The showcase behind ``python -m diffopt demo`` and the ``examples/`` scripts (private).

- :mod:`~diffopt._demo.frameworks`: pick a framework by name, move NumPy data in
  and out, take gradients with the framework's own autodiff;
- :mod:`~diffopt._demo.graph`: the 9-node shortest-path graph;
- :mod:`~diffopt._demo.terrain`: synthetic Warcraft-like terrain maps;
- :mod:`~diffopt._demo.checks`: the demo's checks against closed forms and published numbers;
- :mod:`~diffopt._demo.figures`: the plots;
- :mod:`~diffopt._demo.runner`: ``demo`` and ``info``.

Nothing here imports a framework at import time.
"""
