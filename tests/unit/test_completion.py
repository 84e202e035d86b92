"""`lmcache completion bash|zsh`: scripts generated from the parser that really complete in the shells."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lmcache.app.cli import main
from lmcache.app.completion import completion_script
from tests.unit.test_spec_flags import SERVER_FLAGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for shell in ("bash", "zsh"):
        path = tmp_path_factory.mktemp(shell) / ("lmcache.bash" if shell == "bash" else "_lmcache")
        path.write_text(completion_script(shell))
        out[shell] = path
    return out


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last word of `lmcache WORDS...` (the shtab function, as <TAB> calls it)."""
    quoted = " ".join(f"'{w}'" for w in ("lmcache", *words))
    program = f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; _shtab_lmcache; "
    program += 'printf "%s\\n" "${COMPREPLY[@]}"'
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=ROOT, check=True)
    return result.stdout.split()


def test_bash_script_is_valid_and_completes_commands_flags_and_choices(scripts: dict[str, Path]) -> None:
    subprocess.run(["bash", "-n", str(scripts["bash"])], check=True)
    assert "server" in _bash_complete(scripts["bash"], "") and "completion" in _bash_complete(
        scripts["bash"], ""
    )
    assert _bash_complete(scripts["bash"], "server", "--l1-s") == ["--l1-size-gb"]
    assert _bash_complete(scripts["bash"], "server", "--eviction-policy", "") == [
        "LRU",
        "IsolatedLRU",
        "noop",
    ]
    assert _bash_complete(scripts["bash"], "bench", "server", "--run") == ["--run-id"]
    assert _bash_complete(scripts["bash"], "quota", "") == ["set", "get", "delete", "list"]
    assert "docs/configuration.md" in _bash_complete(scripts["bash"], "server", "--config", "docs/conf")


def test_every_spec_flag_is_offered(scripts: dict[str, Path]) -> None:
    offered = set(_bash_complete(scripts["bash"], "server", "--"))
    assert set(SERVER_FLAGS) - offered == set()
    zsh = scripts["zsh"].read_text()
    assert [flag for flag in SERVER_FLAGS if flag not in zsh] == []
    assert zsh.startswith("#compdef lmcache")


def test_zsh_script_parses(scripts: dict[str, Path]) -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (scripts/test installs it); the script's content was still checked")
    subprocess.run([zsh, "-n", str(scripts["zsh"])], check=True)


def test_the_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out == completion_script("zsh")
    with pytest.raises(SystemExit) as stop:
        main(["completion", "fish"])
    assert stop.value.code == 2
