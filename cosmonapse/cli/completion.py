"""``cosmo completion SHELL``: the shell completion script (click's), and how to install it.

``cosmo completion bash`` prints the script; ``--install`` adds one line that loads it to
the shell's start-up file (``~/.bashrc``, ``~/.zshrc`` or fish's completions directory),
once.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from click.shell_completion import get_completion_class

__all__ = ["completion"]

_VAR = "_COSMO_COMPLETE"
_LOADERS = {
    "bash": ("~/.bashrc", f'eval "$({_VAR}=bash_source cosmo)"'),
    "zsh": ("~/.zshrc", f'eval "$({_VAR}=zsh_source cosmo)"'),
    "fish": ("~/.config/fish/completions/cosmo.fish", f"{_VAR}=fish_source cosmo | source"),
}


@click.command()
@click.argument("shell", type=click.Choice(sorted(_LOADERS)))
@click.option("--install", is_flag=True, help="Add the line that loads it to the shell's start-up file.")
@click.pass_context
def completion(ctx: click.Context, shell: str, install: bool) -> None:
    """Print (or --install) shell completion for `cosmo`: bash, zsh or fish."""
    if install:
        rc, line = _LOADERS[shell]
        path = Path(os.path.expanduser(rc))
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if line in text:
            click.echo(f"already installed in {path}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(("" if not text or text.endswith("\n") else "\n") + f"# cosmo completion\n{line}\n")
        click.echo(f"added to {path}; open a new shell to use it")
        return
    cls = get_completion_class(shell)
    assert cls is not None
    root = ctx.find_root().command
    click.echo(cls(root, {}, "cosmo", _VAR).source())
