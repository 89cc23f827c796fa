"""The `gateway` command: build, and (with the service) serve, replay, compare, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from service import serve

    try:  # builders (scikit-learn) are not installed in a serving-only image
        from builders.cli import add_arguments as add_build_arguments

        build = sub.add_parser(
            "build", help="train candidates and ensembles, export to ONNX, write a repository"
        )
        add_build_arguments(build)
    except ImportError:  # pragma: no cover
        pass
    serve.add_arguments(sub.add_parser("serve", help="serve a repository with BentoML"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; argparse exits 2 on usage errors, commands return 2 on bad input."""
    args = _parser().parse_args(argv)
    if args.command == "build":
        from builders.cli import run

        return run(args)
    if args.command == "serve":
        from service import serve

        return serve.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
