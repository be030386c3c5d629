"""The `neuroscale` command line."""

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroscale",
        description="Neural coarse-graining closures in differentiable solvers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="the main job: run the solvers on the embedded defaults, write a report",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._showcase import run_showcase

        run_showcase(args.out, quick=args.quick)
        return 0
    raise AssertionError(args.command)  # argparse refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
