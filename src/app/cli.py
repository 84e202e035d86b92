"""The `lmcache` command: parses flags generated from the config models and builds through the container.

Configuration mistakes print one `lmcache <cmd>: error: ...` line each and exit 2, without a traceback.
The server, coordinator and benchmark modules (torch, zmq) are imported only by the command that runs them,
so the operator commands (`lmcache ping kvcache`, ...) and `--help` start quickly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcache import __version__
from lmcache.app.bench_args import add_bench_parser
from lmcache.app.completion import add_completion_parser, run_completion
from lmcache.app.config import ConfigError, CoordinatorConfig, ServerConfig, dump_config, load_config
from lmcache.app.config.flags import CONFIG_DEST, PRINT_CONFIG_DEST, add_config_flags
from lmcache.app.logging_setup import configure_logging
from lmcache.app.ops_cli import OPS_COMMANDS, add_ops_parsers, run_ops
from lmcache.app.trace_args import add_trace_parser

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pydantic import BaseModel

__all__ = ("EXIT_CONFIG", "build_parser", "main")

EXIT_CONFIG = 2

logger = logging.getLogger("lmcache.app.cli")


def build_parser() -> argparse.ArgumentParser:
    """The whole `lmcache` parser; each subcommand's flags come from its config model."""
    parser = argparse.ArgumentParser(
        prog="lmcache", description="lmcache: a KV-cache server for LLM inference."
    )
    parser.add_argument("--version", action="version", version=f"lmcache {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, model, summary in (
        ("server", ServerConfig, "Run the KV-cache server (ZMQ control plane + HTTP frontend)."),
        ("coordinator", CoordinatorConfig, "Run the fleet coordinator (membership, L2 quotas, eviction)."),
    ):
        sub = commands.add_parser(name, help=summary, description=summary, argument_default=argparse.SUPPRESS)
        add_config_flags(sub, model)
        sub.set_defaults(_model=model)
    add_bench_parser(commands)
    add_ops_parsers(commands)
    add_trace_parser(commands)
    add_completion_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lmcache` console script; returns the exit status."""
    namespace = build_parser().parse_args(argv)
    if namespace.command == "bench":
        from lmcache.app.bench import run_bench  # torch: only when a benchmark runs

        configure_logging("WARNING")
        return run_bench(namespace)
    if namespace.command in OPS_COMMANDS:
        return run_ops(namespace)
    if namespace.command == "trace":
        from lmcache.app.trace_cli import run_trace  # msgspec and the replay engine: only when used

        configure_logging("WARNING")
        return run_trace(namespace)
    if namespace.command == "completion":
        return run_completion(namespace)
    args = vars(namespace)
    command: str = args.pop("command")
    model: type[BaseModel] = args.pop("_model")
    profiles = [Path(p) for p in args.pop(CONFIG_DEST, [])]
    print_only = bool(args.pop(PRINT_CONFIG_DEST, False))
    try:
        config = load_config(model, profiles=profiles, env=os.environ, flags=args)
        configure_logging(str(getattr(config, "log_level", "INFO")))
        if print_only:
            sys.stdout.write(dump_config(config))
            return 0
        return _RUNNERS[command](config)
    except ConfigError as exc:
        for message in exc.messages:
            print(f"lmcache {command}: error: {message}", file=sys.stderr)
        return EXIT_CONFIG


def _run_server(config: Any) -> int:
    import zmq  # the server's imports (torch, zmq) wait until one starts

    from lmcache.app.container import ServerContainer
    from lmcache.app.l1_medium import L1MemoryError
    from lmcache.app.runtime import ServerRuntime

    container = ServerContainer(config=config)
    try:  # L2 first (a ConfigError naming --l2-adapter #N), then the L1 medium (SHM, DAX, GDS) must be usable
        graph = container.graph()
    except L1MemoryError as exc:
        raise ConfigError(str(exc)) from None
    logger.debug("Effective configuration:\n%s", dump_config(config))
    runtime = ServerRuntime(graph)
    try:
        runtime.start()
    except zmq.ZMQError as exc:
        raise ConfigError(f"--host/--port: cannot bind {config.mp.host}:{config.mp.port} ({exc})") from None
    return runtime.serve_forever()


def _run_coordinator(config: Any) -> int:
    from lmcache.app.coordinator_main import run_coordinator

    return run_coordinator(config)


_RUNNERS: dict[str, Callable[[Any], int]] = {"server": _run_server, "coordinator": _run_coordinator}


if __name__ == "__main__":
    sys.exit(main())
