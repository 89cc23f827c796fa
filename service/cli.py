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
    from service import compare_table, demo, replay_cli

    replay_cli.add_arguments(
        sub.add_parser(
            "replay",
            help="send a table as live traffic with delayed labels, then compare",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    compare_table.add_arguments(
        sub.add_parser("compare", help="offline vs online comparison of a running gateway")
    )
    demo.add_arguments(sub.add_parser("demo", help="build, serve, replay with drift, compare (the main job)"))
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
    if args.command == "replay":
        from service import replay_cli

        return replay_cli.run_cli(args)
    if args.command == "compare":
        from service import compare_table

        return compare_table.run(args)
    if args.command == "demo":
        from service import demo

        return demo.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
