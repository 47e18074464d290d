"""`peer shell-init bash|zsh|fish`: the shell integration, loaded with
`eval "$(peer shell-init zsh)"` (fish: `peer shell-init fish | source`).

What it sets up, and nothing else:
- a hook that records every command line typed, with its exit status, directory,
  duration and session, by running `peer history add` in the background (the prompt
  never waits for it; `peer.cli.quick` keeps that process short);
- ctrl-r bound to `peer history search -i`, whose choice replaces the line being
  edited: enter runs it at once, tab leaves it there to edit (esc leaves the line as
  it was). The search says which key chose (`--widget`: a first line `run` or
  `edit`); zsh then calls `zle accept-line`, fish `commandline -f execute`, and bash,
  whose `bind -x` functions cannot accept the line, binds ctrl-r to a macro of two
  keys: the first runs the search, the second is bound by it, before readline reads
  it, to `accept-line` (run) or to redrawing the line (edit);
- with `--up-arrow`, the up arrow bound to the same search, in this session first.

`PEER_SESSION` names the shell session (for the search's "this session" mode).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peer.cli.basics import Parser
from peer.cli.quick import command_at

SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# peer: shell history for bash (eval "$(peer shell-init bash)")
export PEER_SESSION="$$.$RANDOM$RANDOM"
__peer_history_number() {
  local line
  line=$(HISTTIMEFORMAT= builtin history 1)
  [[ $line =~ ^\ *([0-9]+) ]] && printf '%s' "${BASH_REMATCH[1]}"
}
__peer_seen=$(__peer_history_number)
__peer_start= __peer_none=
# PS0 is expanded just before a command line runs: note the time (microseconds), and
# show nothing (the substring of an empty, set variable: an unset one skips the math).
# Before bash 5 there is no EPOCHREALTIME: commands are recorded without a duration.
[[ -n ${EPOCHREALTIME-} ]] &&
  PS0='${__peer_none:0:$((__peer_start=${EPOCHREALTIME/[.,]/},0))}'"${PS0-}"
# A command was run when the history has a new entry (not for an empty line, nor for
# one history leaves out, as HISTCONTROL says).
__peer_precmd() {
  local code=$? now=${EPOCHREALTIME-} line number command took=()
  line=$(HISTTIMEFORMAT= builtin history 1)
  if [[ $line =~ ^\ *([0-9]+)\*?\ \ (.*)$ ]]; then
    number=${BASH_REMATCH[1]} command=${BASH_REMATCH[2]}
    if [[ $number != "$__peer_seen" && -n $command ]]; then
      [[ -n $__peer_start && -n $now ]] &&
        took=(--duration "$(( (${now/[.,]/} - __peer_start) * 1000 ))")
      (command peer history add --exit "$code" --cwd "$PWD" "${took[@]}" \
        --session "$PEER_SESSION" -- "$command" >/dev/null 2>&1 &)
    fi
    __peer_seen=$number
  fi
  __peer_start=
  return $code
}
PROMPT_COMMAND="__peer_precmd${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
__peer_search() {
  local picked action=edit
  picked=$(command peer history search -i --widget "$@" -- "$READLINE_LINE" </dev/tty)
  if [[ $picked == *$'\n'* ]]; then
    action=${picked%%$'\n'*}
    READLINE_LINE=${picked#*$'\n'}
    READLINE_POINT=${#READLINE_LINE}
  fi
  # the macro's second key, read once this returns: run the line, or only redraw it
  if [[ $action == run ]]; then
    bind '"\C-x\C-p\C-a": accept-line'
  else
    bind '"\C-x\C-p\C-a": redraw-current-line'
  fi
}
bind '"\C-x\C-p\C-a": redraw-current-line'
bind -x '"\C-x\C-p\C-r": __peer_search'
bind '"\C-r": "\C-x\C-p\C-r\C-x\C-p\C-a"'
"""

_BASH_UP = r"""__peer_search_up() { __peer_search --mode session; }
bind -x '"\C-x\C-p\C-u": __peer_search_up'
bind '"\e[A": "\C-x\C-p\C-u\C-x\C-p\C-a"'
bind '"\eOA": "\C-x\C-p\C-u\C-x\C-p\C-a"'
"""

_ZSH = r"""# peer: shell history for zsh (eval "$(peer shell-init zsh)")
zmodload zsh/datetime 2>/dev/null
export PEER_SESSION="$$.$RANDOM$RANDOM"
typeset -g __peer_command= __peer_start=
__peer_preexec() {
  __peer_command=$1
  __peer_start=$EPOCHREALTIME
}
__peer_precmd() {
  local code=$?
  [[ -n $__peer_command ]] || return
  local -i ns=$(( (EPOCHREALTIME - __peer_start) * 1e9 ))
  command peer history add --exit $code --cwd "$PWD" --duration $ns \
    --session "$PEER_SESSION" -- "$__peer_command" &>/dev/null &!
  __peer_command=
}
autoload -Uz add-zsh-hook
add-zsh-hook preexec __peer_preexec
add-zsh-hook precmd __peer_precmd
__peer_search() {
  local picked action=edit
  picked=$(command peer history search -i --widget "$@" -- "$BUFFER" </dev/tty)
  if [[ $picked == *$'\n'* ]]; then
    action=${picked%%$'\n'*}
    BUFFER=${picked#*$'\n'}
    CURSOR=${#BUFFER}
  fi
  zle reset-prompt
  [[ $action == run ]] && zle accept-line
  return 0
}
__peer_search_widget() { __peer_search; }
zle -N __peer_search_widget
bindkey '^r' __peer_search_widget
bindkey -M viins '^r' __peer_search_widget 2>/dev/null
"""

_ZSH_UP = r"""__peer_search_up_widget() { __peer_search --mode session; }
zle -N __peer_search_up_widget
bindkey '^[[A' __peer_search_up_widget
bindkey '^[OA' __peer_search_up_widget
"""

_FISH = r"""# peer: shell history for fish (peer shell-init fish | source)
set -gx PEER_SESSION "$fish_pid."(random)(random)
function __peer_postexec --on-event fish_postexec
    set -l code $status
    test -n "$argv[1]"; or return
    command peer history add --exit $code --cwd "$PWD" --duration "$CMD_DURATION"000000 \
        --session "$PEER_SESSION" -- "$argv[1]" >/dev/null 2>&1 &
    disown
end
function __peer_search
    set -l line (commandline -b)
    set -l picked (command peer history search -i --widget $argv -- "$line" </dev/tty \
        | string collect)
    set -l parts (string split -m 1 \n -- "$picked")
    if test (count $parts) -eq 2
        commandline -r -- $parts[2]
    end
    commandline -f repaint
    if test "$parts[1]" = run
        commandline -f execute
    end
end
bind \cr __peer_search
bind -M insert \cr __peer_search 2>/dev/null
"""

_FISH_UP = r"""function __peer_search_up
    __peer_search --mode session
end
bind \e\[A __peer_search_up
bind \eOA __peer_search_up
"""

SCRIPTS = {"bash": (_BASH, _BASH_UP), "zsh": (_ZSH, _ZSH_UP), "fish": (_FISH, _FISH_UP)}


def script(shell: str, up_arrow: bool = False) -> str:
    """The integration for `shell`: the hook and ctrl-r (and the up arrow if asked)."""
    main, up = SCRIPTS[shell]
    return main + (up if up_arrow else "")


def handles(argv: Sequence[str]) -> bool:
    """Whether `argv` is `[--home DIR] [--debug] shell-init ...` (run at every shell's
    start: it prints without building the whole CLI)."""
    return list(argv[command_at(argv) :])[:1] == ["shell-init"]


def main(argv: Sequence[str]) -> int:
    """`peer shell-init` on its own parser (the global flags accepted, and ignored)."""
    parser = Parser(prog="peer")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--debug", action="store_true")
    commands = parser.add_subparsers()
    register(commands)
    args = parser.parse_args(argv)
    print(script(args.shell, args.up_arrow), end="")
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "shell-init",
        help="print the shell integration: history hook, ctrl-r search",
        description='Print the shell integration; load it with eval "$(peer shell-init '
        'zsh)" in ~/.zshrc (bash: ~/.bashrc; fish: `peer shell-init fish | source` in '
        "~/.config/fish/config.fish).",
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.add_argument(
        "--up-arrow", action="store_true", help="bind the up arrow to the search too"
    )
    parser.set_defaults(handler=cmd_shell_init)


async def cmd_shell_init(args: argparse.Namespace) -> int:
    print(script(args.shell, args.up_arrow), end="")
    return 0
