"""`eval "$(peer shell-init SHELL)"` in real bash, zsh and fish, in a real terminal.

Each test starts the shell in a private tmux server (`tmux -L`), with a temporary
HOME (and ZDOTDIR) and peer home, so no real rc file or history is touched; types a
command with `send-keys`, sees it recorded (exit status, directory, duration,
session); opens ctrl-r, types, picks it with tab and sees it on the prompt line, not
run; leaves a second search with esc, the line as it was; and picks a command with
enter, which runs it (its output shows, and it is recorded again). Every wait polls the screen
or the store with a deadline. `make test` installs tmux, zsh and fish (`make sysdeps`);
a machine without one skips its tests and says which.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import ok

WAIT_S = 30.0
POLL_S = 0.1
PROMPT = "peer-test$ "
BIN = Path(sys.executable).parent  # the venv's bin: `peer` is installed beside python


def wait_for(what: str, check: Callable[[], Any], describe: Callable[[], str]) -> Any:
    """Poll `check` until it returns something true, for at most WAIT_S seconds."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"gave up waiting for {what}; the terminal shows:\n{describe()}")


class Terminal:
    """One shell in its own tmux server, 200 columns wide."""

    def __init__(self, name: str) -> None:
        self.socket = f"peer-test-{os.getpid()}-{name}"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def start(self, command: list[str]) -> None:
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "40", *command)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "0", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "0", "-l", text)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "0")

    def prompt_line(self) -> str | None:
        """What is typed on the last line showing the prompt (the line being edited);
        None before the first prompt. (tmux drops the spaces a line ends with.)"""
        mark = PROMPT.rstrip()
        lines = [line for line in self.screen().splitlines() if line.startswith(mark)]
        return lines[-1][len(mark) :].strip() if lines else None

    def wait_screen(self, text: str) -> None:
        wait_for(repr(text), lambda: text in self.screen(), self.screen)

    def wait_prompt(self, line: str) -> None:
        """Wait until the line being edited is `line` (fish may grey a suggestion after
        what is typed: then only the start is compared)."""

        def shows() -> bool:
            typed = self.prompt_line()
            return typed is not None and (typed == line or (bool(line) and typed.startswith(line)))

        wait_for(f"the prompt line {line!r}", shows, self.screen)

    def close(self) -> None:
        """Stop the server, and remove its socket (tmux leaves it behind)."""
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            capture_output=True,
            timeout=WAIT_S,
            check=False,
        )
        sockets = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (sockets / self.socket).unlink(missing_ok=True)


def rc_files(shell: str, home: Path, peer_home: Path, flags: str = "") -> list[str]:
    """Write the shell's rc file in `home`; the command that starts the shell."""
    path = f"{BIN}:/usr/bin:/bin"
    init = f"peer shell-init {shell} {flags}".rstrip()
    if shell == "bash":
        (home / ".bashrc").write_text(
            f"export PATH={path} PEER_HOME={peer_home}\nPS1='{PROMPT}'\neval \"$({init})\"\n"
        )
        return ["bash", "--noprofile", "--rcfile", str(home / ".bashrc"), "-i"]
    if shell == "zsh":
        (home / ".zshrc").write_text(
            f"export PATH={path} PEER_HOME={peer_home}\nPS1='{PROMPT}'\neval \"$({init})\"\n"
        )
        return ["zsh", "-i"]
    config = home / ".config" / "fish"
    config.mkdir(parents=True)
    (config / "config.fish").write_text(
        f"set -gx PATH {BIN} /usr/bin /bin\nset -gx PEER_HOME {peer_home}\n"
        f"function fish_prompt; echo -n '{PROMPT}'; end\nfunction fish_greeting; end\n"
        f"{init} | source\n"
    )
    return ["fish", "-i"]


@pytest.fixture
def terminal(request: pytest.FixtureRequest) -> Iterator[Terminal]:
    shell = request.param
    for tool in ("tmux", shell):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make sysdeps` installs it)")
    term = Terminal(shell)
    try:
        yield term
    finally:
        term.close()


def history(peer_home: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(ok(peer_home, "history", "list", "--json").out)
    return entries


def start(terminal: Terminal, shell: str, tmp_path: Path, flags: str = "") -> tuple[Path, Path]:
    """The shell started in `terminal` with its integration; (peer home, a work dir)."""
    home, peer_home, work = tmp_path / "home", tmp_path / "peer", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    ok(peer_home, "init", "--name", shell)
    command = rc_files(shell, home, peer_home, flags)
    env = ["env", "-i", f"HOME={home}", f"ZDOTDIR={home}", "TERM=xterm-256color", "LANG=C.UTF-8"]
    terminal.start([*env, "PATH=/usr/bin:/bin", *command])
    terminal.wait_prompt("")
    return peer_home, work


@pytest.mark.parametrize("terminal", ["bash", "zsh", "fish"], indirect=True)
def test_a_command_is_recorded_and_recalled_with_ctrl_r(
    terminal: Terminal, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shell = request.node.callspec.params["terminal"]
    peer_home, work = start(terminal, shell, tmp_path)

    typed = f"cd {work} && sh -c 'sleep 0.2; exit 3'"
    terminal.type(typed)
    terminal.keys("Enter")
    recorded = wait_for("the entry", lambda: history(peer_home), terminal.screen)
    assert [e["command"] for e in recorded] == [typed]
    entry = recorded[0]
    assert (entry["exit"], entry["cwd"]) == (3, str(work))
    assert entry["duration"] >= 200 * 10**6  # it slept 0.2 s
    assert entry["session"]

    terminal.wait_prompt("")
    terminal.keys("C-r")
    terminal.wait_screen("[all hosts]")
    terminal.type("sleep 0.2")
    terminal.wait_screen("exit 3")
    terminal.keys("Tab")
    terminal.wait_prompt(typed)
    assert "[all hosts]" not in terminal.screen()
    assert len(history(peer_home)) == 1  # on the line, not run

    terminal.keys("C-u")
    terminal.wait_prompt("")
    terminal.type("echo kept")
    terminal.keys("C-r")
    terminal.wait_screen("[all hosts]")
    terminal.keys("Escape")
    terminal.wait_prompt("echo kept")
    assert "[all hosts]" not in terminal.screen()


@pytest.mark.parametrize("terminal", ["bash", "zsh", "fish"], indirect=True)
def test_enter_in_the_search_runs_the_command(
    terminal: Terminal, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Enter runs the chosen command at once, as if typed: its output shows, and the
    hook records it again."""
    shell = request.node.callspec.params["terminal"]
    peer_home, _ = start(terminal, shell, tmp_path)
    typed = "printf 'ran-%s\\n' 42"  # no line `ran-42` but its output
    terminal.type(typed)
    terminal.keys("Enter")
    wait_for("the entry", lambda: len(history(peer_home)) == 1, terminal.screen)
    terminal.wait_prompt("")
    terminal.keys("C-r")
    terminal.wait_screen("[all hosts]")
    terminal.type("ran-")
    terminal.wait_screen("1 shown")
    terminal.keys("Enter")
    wait_for("the second run", lambda: len(history(peer_home)) == 2, terminal.screen)
    assert [e["command"] for e in history(peer_home)] == [typed, typed]
    wait_for("its output", lambda: _outputs(terminal, "ran-42") == 2, terminal.screen)
    terminal.wait_prompt("")


def _outputs(terminal: Terminal, text: str) -> int:
    return sum(line.strip() == text for line in terminal.screen().splitlines())


@pytest.mark.parametrize("terminal", ["bash", "zsh", "fish"], indirect=True)
def test_up_arrow_searches_this_session_and_ctrl_r_switches_mode(
    terminal: Terminal, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """With --up-arrow: up opens the search on this session's commands; ctrl-r then
    shows this directory's, then all hosts'."""
    shell = request.node.callspec.params["terminal"]
    peer_home, work = start(terminal, shell, tmp_path, "--up-arrow")
    ok(peer_home, "history", "add", "--session", "elsewhere", "--cwd", "/", "--", "echo other")
    terminal.type(f"cd {work} && echo mine")
    terminal.keys("Enter")
    wait_for("the entry", lambda: len(history(peer_home)) == 2, terminal.screen)
    terminal.wait_prompt("")
    terminal.keys("Up")
    terminal.wait_screen("[this session] 1 shown")
    assert "echo mine" in terminal.screen() and "echo other" not in terminal.screen()
    terminal.keys("C-r")
    terminal.wait_screen("[this directory] 1 shown")
    terminal.keys("C-r")
    terminal.wait_screen("[all hosts] 2 shown")
    assert "echo other" in terminal.screen()
    terminal.keys("Escape")
    terminal.wait_prompt("")
