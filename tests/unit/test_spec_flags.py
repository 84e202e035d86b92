"""Every flag the user docs name is in `lmcache server|coordinator --help`, with help text and default."""

from __future__ import annotations

import re

import pytest

from lmcache.app.cli import main

# configuration-reference.md and server-command.md, in the order the pages list them.
SERVER_FLAGS = [
    "--instance-id",
    "--host",
    "--port",
    "--chunk-size",
    "--max-workers",
    "--max-gpu-workers",
    "--max-cpu-workers",
    "--hash-algorithm",
    "--engine-type",
    "--supported-transfer-mode",
    "--runtime-plugin-locations",
    "--runtime-plugin-config",
    "--script-allowed-imports",
    "--shm-name",
    "--worker-reap-timeout-seconds",
    "--worker-registration-grace-seconds",
    "--enable-segmented-prefix",
    "--lookup-hash-log-dir",
    "--lookup-hash-log-rotation-interval",
    "--lookup-hash-log-rotation-max-size",
    "--lookup-hash-log-max-files",
    "--http-host",
    "--http-port",
    "--l1-size-gb",
    "--l1-use-lazy",
    "--no-l1-use-lazy",
    "--l1-init-size-gb",
    "--l1-align-bytes",
    "--l1-devdax-path",
    "--gds-l1-path",
    "--gds-l1-use-direct-io",
    "--no-gds-l1-use-direct-io",
    "--l1-write-ttl-seconds",
    "--l1-read-ttl-seconds",
    "--eviction-policy",
    "--eviction-trigger-watermark",
    "--eviction-ratio",
    "--l2-store-policy",
    "--l2-prefetch-policy",
    "--l2-prefetch-max-in-flight",
    "--periodic-notifier-interval-ms",
    "--l2-adapter",
    "--disable-observability",
    "--disable-metrics",
    "--disable-logging",
    "--enable-tracing",
    "--event-bus-queue-size",
    "--otlp-endpoint",
    "--prometheus-port",
    "--metrics-sample-rate",
    "--coordinator-url",
    "--coordinator-advertise-ip",
    "--coordinator-heartbeat-interval",
    "--coordinator-l2-event-reporting",
    "--coordinator-l2-event-flush-interval",
    "--trace-level",
    "--trace-output",
]

# coordinator-command.md, plus the checkpoint flags LMCache added later.
COORDINATOR_FLAGS = [
    "--host",
    "--port",
    "--instance-timeout",
    "--health-check-interval",
    "--eviction-check-interval",
    "--eviction-ratio",
    "--trigger-watermark",
    "--blend-chunk-size",
    "--blend-probe-stride",
    "--timeout-keep-alive",
    "--checkpoint-path",
    "--checkpoint-interval",
]


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _flag_entries(text: str) -> dict[str, str]:
    """Map each flag to the help paragraph argparse printed for it."""
    entries: dict[str, str] = {}
    options = text.split("options:", 1)[1]
    for block in re.split(r"\n(?=  --)", options):
        header = block.strip().split("  ")[0]  # "--l1-use-lazy, --no-l1-use-lazy" or "--port PORT"
        names = re.findall(r"--[a-z0-9-]+", header)
        for name in names:
            entries[name] = " ".join(block.split())
    return entries


@pytest.mark.parametrize(("command", "flags"), [("server", SERVER_FLAGS), ("coordinator", COORDINATOR_FLAGS)])
def test_every_spec_flag_is_listed_with_a_default(
    command: str, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    entries = _flag_entries(_help(command, capsys))
    missing = [flag for flag in flags if flag not in entries]
    assert missing == []
    without_default = [flag for flag in flags if "(default: " not in entries[flag]]
    assert without_default == []


@pytest.mark.parametrize(
    ("command", "flag", "shown"),
    [
        ("server", "--port", "default: 5555"),
        ("server", "--host", "default: localhost"),
        ("server", "--http-port", "default: 8080"),
        ("server", "--l1-size-gb", "default: required"),
        ("server", "--eviction-policy", "default: required"),
        ("server", "--max-gpu-workers", "default: inherits --max-workers"),
        ("server", "--instance-id", "default: a fresh UUID v4 per start"),
        ("server", "--eviction-trigger-watermark", "default: 0.8"),
        ("server", "--l1-write-ttl-seconds", "default: 600"),
        ("server", "--log-level", "env LMCACHE_LOG_LEVEL"),
        ("coordinator", "--port", "default: 9300"),
        ("coordinator", "--trigger-watermark", "env LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK"),
        ("coordinator", "--timeout-keep-alive", "default: 10"),
    ],
)
def test_help_shows_documented_defaults(
    command: str, flag: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shown in _flag_entries(_help(command, capsys))[flag]
