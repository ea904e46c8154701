"""The ``llkd`` command line. Each subcommand lives in ``llkd.commands.<name>`` and exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Other installed packages add
commands through the entry-point group ``llkd.commands`` (name -> module with the same three):
the benchmark (``benchmarks/``, package ``llkd_bench``) brings ``llkd bench`` and its siblings
that way, so the library itself carries no benchmark code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Subcommand modules, in the order `llkd --help` lists them.
COMMANDS = [
    "label",
    "train",
    "distill",
    "evaluate",
    "predict",
    "demo",
    "export",
    "teacher_report",
    "serve_teacher",
]
PLUGIN_GROUP = "llkd.commands"


def command_modules() -> list[tuple[str, str]]:
    """(command name, module path): the library's own, then those of installed plugins."""
    from importlib.metadata import entry_points

    own = [(name.replace("_", "-"), f"llkd.commands.{name}") for name in COMMANDS]
    taken = {name for name, _ in own}
    plugins = sorted((ep.name, ep.value) for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in taken)
    return own + plugins


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the None of config flags (their help already names the
    config default, which a None flag leaves in force)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llkd", description="Distil an LLM teacher into a small text classifier with LLKD sample selection.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    # -v also after the subcommand (llkd label ... -v); SUPPRESS keeps the top-level value when absent
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd, path in command_modules():
        module = importlib.import_module(path)
        p = sub.add_parser(cmd, help=module.HELP, description=module.HELP, formatter_class=_HelpFormatter, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # transformers' load reports (e.g. "classifier.weight MISSING" for a fresh head, which
        # is expected) and weight-loading bars drown llkd's own progress output.
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    from llkd.config import ConfigError
    from llkd.data.errors import DataError
    from llkd.models import ModelNotFound, conversion_progress
    from llkd.errors import CacheError, TeacherUnavailable

    try:
        with conversion_progress(not getattr(args, "no_progress", False)):  # the one bar no pipeline call reaches
            return int(args._run(args) or 0)
    except (CacheError, ConfigError, DataError, ModelNotFound, TeacherUnavailable) as e:
        print(f"llkd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llkd {args.command}: interrupted; finished work is saved and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
