"""The `gateway` command: build, serve, replay, compare, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from cli import build, compare, demo, serve
    from cli.replay import command as replay

    build.add_arguments(
        sub.add_parser("build", help="train candidates and ensembles, export to ONNX, write a repository")
    )
    serve.add_arguments(sub.add_parser("serve", help="serve a repository with BentoML"))
    replay.add_arguments(
        sub.add_parser(
            "replay",
            help="send a table as live traffic with delayed labels, then compare",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    compare.add_arguments(sub.add_parser("compare", help="offline vs online comparison of a running gateway"))
    demo.add_arguments(sub.add_parser("demo", help="build, serve, replay with drift, compare (the main job)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; argparse exits 2 on usage errors, commands return 2 on bad input."""
    try:
        parser = _parser()
    except ModuleNotFoundError as exc:  # a serving-only install: the tools' libraries are an extra
        print(
            f"gateway: the command-line tools need {exc.name}: pip install 'ensemble-gateway[tools]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    if args.command == "build":
        from cli import build

        return build.run(args)
    if args.command == "serve":
        from cli import serve

        return serve.run(args)
    if args.command == "replay":
        from cli.replay import command as replay

        return replay.run_cli(args)
    if args.command == "compare":
        from cli import compare

        return compare.run(args)
    if args.command == "demo":
        from cli import demo

        return demo.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
