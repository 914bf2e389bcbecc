"""The documentation site works offline: no page loads a script or a stylesheet from the internet.

MathJax is served from the site itself (the ``sphinx-mathjax-offline`` extension copies it into
``_static/mathjax``), so a page with formulas renders without a network. The site is built into
a temporary folder, or, when ``DIFFOPT_DOCS_HTML`` names an existing build (``tox -e docs`` writes
``docs/_build/html``), that build is checked instead. Skipped where the ``docs`` extra (Sphinx,
furo, MyST, numpydoc, sphinx-mathjax-offline) is not installed or the checkout has no ``docs/``.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEEDED = ("sphinx", "furo", "myst_parser", "numpydoc", "sphinx-mathjax-offline")
# a script or stylesheet whose address has a scheme or is protocol-relative
REMOTE = re.compile(r"<(script|link)\b[^>]*\b(src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.I)


def _missing():
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    given = os.environ.get("DIFFOPT_DOCS_HTML")
    if given:
        return pathlib.Path(given)
    if not (ROOT / "docs" / "conf.py").is_file():
        pytest.skip("no docs/ in this checkout")
    if _missing():
        pytest.skip(f"the docs extra is not installed ({', '.join(_missing())} missing)")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _remote_assets(html):
    return [m.group(3) for m in REMOTE.finditer(html)
            if not (m.group(1).lower() == "link" and not re.search(r"rel\s*=\s*[\"']?(stylesheet|preload|modulepreload)",
                                                                 m.group(0) + html[m.end():m.end() + 200], re.I))]


def test_remote_asset_pattern_catches_a_cdn_script():
    cdn = '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
    assert _remote_assets(cdn) == ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"]
    assert _remote_assets('<script src="//example.org/x.js"></script>') == ["//example.org/x.js"]
    assert _remote_assets('<script src="_static/mathjax/tex-chtml.js"></script>') == []


def test_no_page_loads_a_script_from_the_internet(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10, f"only {len(pages)} pages in {site}"
    remote = {str(p.relative_to(site)): found for p in pages if (found := _remote_assets(p.read_text(encoding="utf-8")))}
    assert not remote, remote


def test_formulas_render_with_the_bundled_mathjax(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    page = (site / "guide" / "perturbed.html").read_text(encoding="utf-8")  # a page full of formulas
    assert re.search(r"<script[^>]*src=\"[./]*_static/mathjax/tex-chtml\.js", page), "MathJax is not loaded locally"
