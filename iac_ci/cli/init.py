"""``iac-ci init [DIR]``: write a first ``.iac-ci.yml`` for a repository's Terraform roots.

It writes two files at DIR's top: ``.iac-ci.yml`` and ``.iac-ci.schema.json``, the schema its
first line points editors at (``# yaml-language-server: $schema=./.iac-ci.schema.json``). A file
next to it works offline and matches the iac-ci that wrote it; a URL would need a network and
would describe whatever version it serves. ``--schema-url`` points at one anyway (a team that
hosts the schema), and then writes no schema file.

It never replaces an ``.iac-ci.yml`` without ``--force``, nor a schema file that differs. A file
is created only if it does not exist (``O_EXCL``, which a symbolic link counts as existing), and
``--force`` replaces the link itself, never what it points to; it never replaces a directory (or
anything else that is not a file or a link). Every target is checked before anything is written:
nothing is written when no root is found, when a file is in the way, or when the file would not
validate.

Exit codes: 0 written (or printed, ``--dry-run``); 2 bad input: no Terraform root, a file in the
way, an invalid option.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from iac_ci.scaffold import render, terraform
from lambda_runtime.job.model import REPO_RE

EXIT_INVALID = 2
CONFIG_NAME = ".iac-ci.yml"
SCHEMA_NAME = ".iac-ci.schema.json"
SCHEMA_URL_RE = r"https?://[!-~]+"  # printable ASCII, no spaces: it ends a comment line
_BY_GIT = " (of the files git lists: tracked, or untracked and not ignored)"
GIT_REMOTE_RE = re.compile(r"[:/](?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def _repo_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(REPO_RE, value):
        raise click.BadParameter(f"expected OWNER/NAME (e.g. acme/infra), got '{value}'")
    return value


def _schema_url_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(SCHEMA_URL_RE, value):
        raise click.BadParameter("expected an http:// or https:// URL without spaces or control characters")
    return value


@click.command("init")
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help=f"Replace an existing {CONFIG_NAME} (and {SCHEMA_NAME}).")
@click.option("--dry-run", is_flag=True, help=f"Print the {CONFIG_NAME} on stdout and write nothing.")
@click.option("--repo", metavar="OWNER/NAME", callback=_repo_option,
              help="The GitHub repository, for the lock names (default: from the git remote 'origin').")
@click.option("--schema-url", metavar="URL", callback=_schema_url_option,
              help=f"Point the editor line at URL instead of writing {SCHEMA_NAME}.")
def init(directory: Path, force: bool, dry_run: bool, repo: str | None, schema_url: str | None) -> None:
    """Write an .iac-ci.yml for the Terraform roots under DIR (default: here): a plan and an apply
    order per root, with its lock and the paths of the modules it uses."""
    err = Console(stderr=True, highlight=False)
    top = directory.resolve()
    found = terraform.discover(top)
    repo = repo or repo_from_git(top)
    if not found.roots:
        _no_roots(found, err)
        sys.exit(EXIT_INVALID)
    from lambda_runtime.github import repo_config_schema

    text = render.render(found, repo, schema=schema_url or f"./{SCHEMA_NAME}")
    problems = render.problems(text, repo)
    if problems:
        err.print(f"[red]error:[/] the {CONFIG_NAME} for {top} would not be valid; nothing written:")
        for p in problems[:50]:
            err.print(f"  - {render.printable(p)}", markup=False, soft_wrap=True)
        sys.exit(EXIT_INVALID)
    if dry_run:
        _summary(found, err)
        click.echo(text, nl=False)
        return
    files = {top / CONFIG_NAME: text}
    if schema_url is None:
        files[top / SCHEMA_NAME] = repo_config_schema.text()
    not_files = [path for path in files if _not_a_file(path)]
    if not_files:
        for path in not_files:
            err.print(f"[red]error:[/] {render.printable(str(path))} exists and is not a file (a directory?): init "
                      "replaces only files, even with --force; nothing written", soft_wrap=True)
        sys.exit(EXIT_INVALID)
    in_the_way = [path for path, content in files.items() if not force and _in_the_way(path, content)]
    if in_the_way:
        for path in in_the_way:
            err.print(f"[red]error:[/] {render.printable(str(path))} exists: not overwritten (--force replaces it, "
                      "--dry-run prints what init would write)", soft_wrap=True)
        sys.exit(EXIT_INVALID)
    _summary(found, err)
    for path, content in sorted(files.items(), key=lambda kv: kv[0].name != SCHEMA_NAME):  # the schema first
        try:
            _write(path, content, replace=force)
        except FileExistsError:
            err.print(f"[red]error:[/] {render.printable(str(path))} appeared meanwhile: not overwritten")
            sys.exit(EXIT_INVALID)
    err.print(f"[green]wrote[/] {render.printable(str(top / CONFIG_NAME))} ({_count(len(found.roots), 'root')}, "
              f"{_count(2 * len(found.roots), 'order')})"
              + (f" and {SCHEMA_NAME}" if schema_url is None else ""), soft_wrap=True)
    err.print(f"check it with: iac-ci validate {render.printable(str(top / CONFIG_NAME))}", soft_wrap=True)
    _warn_if_not_the_top(top, err)
    if (top / ".iac-ci.yaml").exists():
        err.print(f"[yellow]note:[/] {render.printable(str(top / '.iac-ci.yaml'))} exists too: the engine reads "
                  f"{CONFIG_NAME}", soft_wrap=True)


def repo_from_git(top: Path) -> str | None:
    """``owner/name`` of the git remote ``origin`` (GitHub's or any host's URL), if there is one."""
    try:
        out = subprocess.run(["git", "-C", str(top), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = GIT_REMOTE_RE.search(out.stdout.strip()) if out.returncode == 0 else None
    if match is None:
        return None
    name = f"{match['owner']}/{match['name']}"
    return name if re.fullmatch(REPO_RE, name) else None


def _warn_if_not_the_top(top: Path, err: Console) -> None:
    """The engine reads .iac-ci.yml at the repository's root, and dirs are relative to it."""
    try:
        out = subprocess.run(["git", "-C", str(top), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    git_top = out.stdout.strip()
    if out.returncode == 0 and git_top and Path(git_top).resolve() != top:
        err.print(f"[yellow]note:[/] {render.printable(str(top))} is inside the git repository "
                  f"{render.printable(git_top)}: iac-ci reads {CONFIG_NAME} at a repository's top folder, and "
                  "the dirs in it are relative to that folder", soft_wrap=True)


def _not_a_file(path: Path) -> bool:
    """Something ``--force`` must not replace: a directory, a FIFO, a socket... (a regular file or
    a symbolic link is replaced; ``os.replace`` cannot put a file over a directory)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def _in_the_way(path: Path, content: str) -> bool:
    """An existing .iac-ci.yml always is; the schema file only when it differs (it is generated)."""
    if not os.path.lexists(path):
        return False
    if path.name == CONFIG_NAME or path.is_symlink() or not path.is_file():
        return True
    try:
        return path.read_text(encoding="utf-8") != content
    except (OSError, UnicodeDecodeError):
        return True


def _write(path: Path, content: str, *, replace: bool) -> None:
    """Create ``path`` (never through a symbolic link), or with ``replace`` swap it for a new file."""
    data = content.encode("utf-8")
    if not replace:
        if os.path.lexists(path) and path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return  # the same schema file: nothing to do
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # a symbolic link at path is replaced, its target left alone
    except BaseException:
        os.unlink(tmp)
        raise


def _summary(found: terraform.Discovery, err: Console) -> None:
    how = ", as git lists them" if found.git else ""
    err.print(f"found {_count(len(found.roots), 'Terraform root')} in {render.printable(str(found.top))} "
              f"({_count(found.searched, 'folder')} searched{how}):", soft_wrap=True)
    width = max(len(render.label(r.path)) for r in found.roots)
    for root in found.roots:
        uses = f"; with {', '.join(root.modules)}" if root.modules else ""
        name = render.printable(render.label(root.path))
        err.print(f"  {name:<{width}}  {render.printable(root.why + uses)}", markup=False, soft_wrap=True)
    _listing(found, err)


def _listing(found: terraform.Discovery, err: Console) -> None:
    lines = []
    if found.modules:
        lines.append("modules: " + ", ".join(m.path for m in found.modules))
    for module in found.modules:
        if module.configures:
            lines.append(f"note: {module.path} has {' and '.join(module.configures)} but is used as a module by "
                         f"{', '.join(module.used_by)}: planned with the roots that use it")
    if found.unused:
        lines.append("modules no folder uses (not planned): " + ", ".join(found.unused))
    if found.skipped:
        lines.append("not searched: " + ", ".join(f"{s.path} ({s.why})" for s in found.skipped))
    lines += [f"note: {n}" for n in found.notes[:50]]
    for line in lines:
        err.print(render.printable(line), markup=False, soft_wrap=True)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _no_roots(found: terraform.Discovery, err: Console) -> None:
    err.print(f"[red]error:[/] no Terraform root found in {render.printable(str(found.top))}: searched "
              f"{_count(found.searched, 'folder')}{_BY_GIT if found.git else ''} for *.tf and *.tf.json files, "
              "skipping .git, .terraform, node_modules, hidden folders and test folders "
              f"({', '.join(sorted(terraform.TEST_NAMES))} holding {', '.join('*' + s for s in terraform.TEST_FILES)} "
              "files, or the tests folder of a Terraform folder); nothing written",
              soft_wrap=True)
    _listing(found, err)
