"""Sphinx configuration: furo theme, MyST Markdown pages, numpydoc API reference.

Builds offline (no intersphinx) and reads offline: MathJax is copied into the site by the
``sphinx-mathjax-offline`` extension, so no page loads a script from the internet
(``tests/test_docs_offline.py`` checks the built HTML). ``tox -e docs`` runs ``sphinx-build -W``
(warnings are errors).
"""

import os
import sys

# tox installs the wheel; a plain `sphinx-build docs docs/_build/html` from a checkout uses the tree.
try:
    import diffopt
except ImportError:  # pragma: no cover - checkout without an install
    sys.path.insert(0, os.path.abspath(".."))
    import diffopt

project = "diffopt"
author = "The diffopt developers"
copyright = "2026, The diffopt developers"
release = diffopt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # after sphinx.ext.mathjax: points mathjax_path at the bundled copy
    "numpydoc",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_mock_imports = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"diffopt {release}"
suppress_warnings = ["myst.header"]
