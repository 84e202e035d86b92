"""`lmcache completion bash|zsh`: a shell completion script generated from the live `lmcache` parser.

The parser is generated from the config models, so the script always offers exactly the flags, choices
and subcommands of the installed version; shtab turns the argparse tree into bash or zsh. Flags whose
value is a path complete file names (directories for `DIR`).

    lmcache completion bash > ~/.local/share/bash-completion/completions/lmcache
    lmcache completion zsh > "${fpath[1]}/_lmcache"
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ("SHELLS", "add_completion_parser", "completion_script", "run_completion")

SHELLS = ("bash", "zsh")
_FILE_METAVARS = {"PATH", "CERT", "KEY"}


def add_completion_parser(commands: Any) -> None:
    """Add `completion SHELL` to the `lmcache` parser."""
    sub = commands.add_parser(
        "completion",
        help="Print a bash or zsh completion script for lmcache.",
        description="Print a bash or zsh completion script generated from this lmcache's parser, e.g. "
        "lmcache completion bash > ~/.local/share/bash-completion/completions/lmcache",
    )
    sub.add_argument("shell", choices=SHELLS, help="The shell to complete in.")


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    """Ask shtab for file (or directory) completion on flags whose metavar names a path."""
    import shtab

    for action in parser._actions:
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        if metavar in _FILE_METAVARS or action.dest.endswith("_path") or action.dest == "_config_paths":
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif metavar == "DIR":
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        for sub in getattr(action, "choices", None) or {}:
            child = action.choices[sub] if isinstance(action.choices, dict) else None
            if child is not None:
                _mark_paths(child)


def completion_script(shell: str) -> str:
    """The completion script for `shell` (bash or zsh)."""
    import shtab

    from lmcache.app.cli import build_parser  # the whole tree, built when asked (cli imports this module)

    parser = build_parser()
    _mark_paths(parser)
    script: str = shtab.complete(parser, shell=shell)
    return script


def run_completion(args: argparse.Namespace) -> int:
    """Print the script; exit status 0."""
    sys.stdout.write(completion_script(args.shell))
    return 0
