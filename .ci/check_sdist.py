"""CI check (tox -e sdist): the source archive holds what its own tests need.

Usage: ``python .ci/check_sdist.py DIST_DIR CHECKOUT``. Unpacks the one ``.tar.gz`` in
DIST_DIR, checks that every ``tests/``, ``examples/`` and ``benchmarks/`` Python file and
the LICENSE of the checkout are in it, installs the unpacked tree,
then, inside it, collects the whole suite and runs ``tests/backends/test_backends.py`` (NumPy).
"""

import glob
import os
import subprocess
import sys
import tarfile
import tempfile


def main(dist, checkout):
    (archive,) = glob.glob(os.path.join(dist, "*.tar.gz"))
    tmp = tempfile.mkdtemp()
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    (root,) = glob.glob(os.path.join(tmp, "pydiffopt-*"))  # the distribution name (pyproject.toml)
    wanted = ["LICENSE", "README.md", "tox.ini", ".ci/run", ".ci/constraints.txt", ".ci/check_bare.py",
              "tests/conftest.py"]
    for folder in ("tests", "examples", "benchmarks", "diffopt"):
        for path in glob.glob(os.path.join(checkout, folder, "**", "*.py"), recursive=True):
            wanted.append(os.path.relpath(path, checkout))
    missing = sorted(p for p in wanted if not os.path.exists(os.path.join(root, p)))
    if missing:
        sys.exit(f"{os.path.basename(archive)} lacks {missing}")
    print(f"{os.path.basename(archive)}: all {len(wanted)} files the tests need are in it")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", root], check=True)
    env = dict(os.environ, DIFFOPT_TEST_BACKENDS="numpy")
    for args in (["--collect-only", "-qq", "tests"], ["-q", "-x", "tests/backends/test_backends.py"]):
        subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root, env=env, check=True)
    print("its tests collect and tests/backends/test_backends.py passes from the unpacked archive")


if __name__ == "__main__":
    main(*sys.argv[1:])
