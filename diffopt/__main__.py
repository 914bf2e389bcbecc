"""Command line: ``python -m diffopt demo`` and ``python -m diffopt info`` (also ``diffopt ...``).

``demo`` runs the four families (perturbed optimizers, I-MLE, soft sorting,
decision-focused learning) on every chosen framework, compares each result
with a closed form, a brute-force search or a published number, prints a table
and writes one PNG per framework; a check whose optional package is missing is
skipped with the ``pip install "pydiffopt[...]"`` line that adds it. ``info``
names the distribution that provides ``import diffopt`` and lists the installed
frameworks, their versions and devices.

Both start the frameworks without their start-up log lines (TensorFlow's C++
messages, see :func:`diffopt._demo.frameworks.load_quietly`): in this command's
own process only.
"""

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser():
    """The ``argparse`` parser of the ``diffopt`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog="diffopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the showcase checks on one or all frameworks, write figures")
    demo.add_argument("--backend", default="all",
                      help="numpy | torch | jax | tensorflow | all (default), or a comma list")
    demo.add_argument("--out", default=None, help="folder for the PNGs (default: ./diffopt-demo)")
    demo.add_argument("--quick", action="store_true", help="small sample counts (seconds, for tests)")
    demo.add_argument("--no-progress", action="store_true",
                      help="no progress bars (drawn on stderr only when it is a terminal)")
    demo.add_argument("--no-figures", action="store_true", help="do not write PNGs")
    info = sub.add_parser("info", help="installed frameworks, versions and devices")
    info.add_argument("--no-devices", action="store_true", help="only versions: import no framework")
    return parser


def main(argv=None):
    """Entry point of ``python -m diffopt`` and the ``diffopt`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 when every demo check that ran passed (skipped ones aside), 1 when one
        failed, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    from diffopt._demo import runner

    if args.command == "info":
        print("\n".join(runner.info_lines(list_devices=not args.no_devices, quiet=True)))
        return 0
    try:
        return runner.run_demo(args.backend, args.out, quick=args.quick, progress=not args.no_progress,
                               figures=not args.no_figures, quiet=True)
    except ValueError as exc:
        print(f"diffopt demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
