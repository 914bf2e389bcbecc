"""CI check (tox -e bare): the built wheel alone in a bare venv (numpy and autoray only).

Usage: ``python .ci/check_bare.py OUT_DIR`` from a folder outside the checkout. Checks that

- ``import diffopt`` comes from the installed distribution ``pydiffopt`` (the only one that provides
  the import name) and imports no framework;
- the wheel ships ``py.typed``, every shim and the LICENSE;
- ``python -m diffopt info`` names the distribution, with no warning;
- ``python -m diffopt demo --backend all`` exits 0 in the bare venv: the checks that need a
  missing package are SKIP, and the output ends with the ``pip install "pydiffopt[...]"`` line
  that adds them; no check fails.
"""

import importlib.metadata as md
import os
import subprocess
import sys

FRAMEWORKS = {"torch", "jax", "tensorflow", "cupy"}


def check_import():
    import diffopt

    assert "site-packages" in diffopt.__file__, f"diffopt imported from {diffopt.__file__}, not the wheel"
    assert not FRAMEWORKS & set(sys.modules), f"import diffopt imported {FRAMEWORKS & set(sys.modules)}"
    providers = md.packages_distributions().get("diffopt")
    assert providers == ["pydiffopt"], f"the import name diffopt comes from {providers}"
    assert md.version("pydiffopt") == diffopt.__version__
    names = {str(f).replace(chr(92), "/") for f in md.files("pydiffopt")}
    need = {"diffopt/py.typed", "diffopt/backends/torch/__init__.py", "diffopt/backends/torch/_sorting.py",
            "diffopt/backends/jax/__init__.py", "diffopt/backends/numpy/_numba_sorting.py"}
    assert need <= names, f"the wheel lacks {need - names}"
    assert any(n.endswith("licenses/LICENSE") for n in names), "no LICENSE in the wheel"
    return diffopt.__version__


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "diffopt", *args], capture_output=True, text=True, timeout=600)
    print(f"$ diffopt {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
    return proc


def main(out):
    version = check_import()
    info = run("info")
    assert info.returncode == 0
    assert info.stdout.splitlines()[1] == f"distribution: pydiffopt {version}", info.stdout
    assert "WARNING" not in info.stdout
    demo = run("demo", "--backend", "all", "--out", os.path.join(out, "demo"))
    assert demo.returncode == 0, "the demo failed in the bare venv"
    rows = [line.rstrip() for line in demo.stdout.splitlines() if line.split(" ")[0] in
            ("numpy", "torch", "jax", "tensorflow")]
    assert rows and not [r for r in rows if not r.endswith(("PASS", "SKIP"))], "a row neither passed nor skipped"
    assert any(r.endswith("SKIP") for r in rows), "nothing skipped in a bare venv"
    assert 'to run the skipped checks: pip install "pydiffopt[' in demo.stdout, "no install hint for the skips"
    print("bare venv: diffopt imports from pydiffopt, info names it, the demo skips what is missing and exits 0")


if __name__ == "__main__":
    main(*sys.argv[1:])
