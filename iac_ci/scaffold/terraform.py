"""Finding a repository's Terraform roots: the folders ``terraform plan`` runs in.

A folder with ``*.tf`` (or ``*.tf.json``) files is either a root or a module. A folder that
another folder calls (``module "x" { source = "../modules/net" }``) is a **module**, whatever it
holds: a provider block in it does not make it plannable alone, and it is planned with every
root that uses it. A folder nobody calls is a **root** when it configures a backend (``backend``
or ``cloud``) or a provider; without either, it is a root too, unless it sits under a
``modules/`` folder (then it is an unused module: published for other repositories, or dead).

Only local sources (``./`` and ``../``, as Terraform defines them) name folders; registry and git
sources do not. A root's paths are its own folder and every local module it uses, transitively,
so a change to a shared module plans every root that uses it.

Not searched: ``.git``, ``.terraform``, ``node_modules``, hidden folders (``.terragrunt-cache``,
``.github``), and test folders (``test``, ``tests``, ``testdata``, ``fixtures``, ...). Terraform's
own tests (``*.tftest.hcl``) and Terratest keep helper roots there that are not the repository's.
A module that a root calls is read wherever it is, even in one of those folders.
"""
from __future__ import annotations

import os
import posixpath
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from iac_ci.scaffold.hcl import Backend, HclFacts, scan, scan_json

TF_SUFFIXES = (".tf", ".tf.json")
SKIPPED_NAMES = frozenset({".git", ".terraform", "node_modules"})
TEST_NAMES = frozenset({"test", "tests", "testdata", "test-data", "fixtures", "test-fixtures", "test_fixtures",
                        "__fixtures__"})
MODULE_FOLDER_NAMES = frozenset({"modules", "module"})
GLOB_CHARACTERS = frozenset("*?")  # the only special characters of when.paths
# the top folder as a root: its own Terraform files (the rest of the top is not its business)
ROOT_FILES = ("*.tf", "*.tf.json", "*.tfvars", "*.tfvars.json", ".terraform.lock.hcl")
MAX_FOLDERS = 20_000  # folders walked; a bigger tree is cut short, and said so
MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Folder:
    path: str  # relative to the repository, POSIX; "." is the repository itself
    files: tuple[str, ...]
    facts: HclFacts


@dataclass(frozen=True)
class Root:
    path: str
    modules: tuple[str, ...]  # the local modules it uses, transitively (sorted)
    backend: Backend | None
    providers: tuple[str, ...]

    @property
    def why(self) -> str:
        """Why it was taken for a root (the comment above its orders)."""
        if self.backend is not None:
            return "backend " + self.backend.kind if self.backend.kind != "cloud" else "a cloud block"
        if self.providers:
            return "provider " + ", ".join(sorted(set(self.providers)))
        return "no backend or provider block, but no folder uses it as a module"

    @property
    def paths(self) -> tuple[str, ...]:
        """The globs of the changes that concern it: its folder's files and its modules' (a module
        inside a folder already listed adds nothing). The repository's own folder (``.``) is its
        Terraform files only: everything else at the top is no business of that root."""
        own = ROOT_FILES if self.path == "." else (f"{self.path}/**",)
        kept: list[str] = [] if self.path == "." else [self.path]
        for module in self.modules:
            if not any(_inside(module, folder) for folder in kept):
                kept.append(module)
        return own + tuple(f"{m}/**" for m in kept if m != self.path)


@dataclass(frozen=True)
class Module:
    path: str
    used_by: tuple[str, ...]  # the folders that call it
    roots: tuple[str, ...]  # the roots that use it, directly or through other modules
    configures: tuple[str, ...]  # "provider aws", "backend s3": what a module should not do alone


@dataclass(frozen=True)
class Skipped:
    path: str
    why: str


@dataclass(frozen=True)
class Discovery:
    top: Path
    roots: tuple[Root, ...]
    modules: tuple[Module, ...]
    unused: tuple[str, ...]  # module folders nobody uses (not roots)
    skipped: tuple[Skipped, ...]  # folders with Terraform files that were not searched
    notes: tuple[str, ...]  # what could not be followed or read
    searched: int  # folders walked

    def module(self, path: str) -> Module | None:
        return next((m for m in self.modules if m.path == path), None)


def skip_reason(name: str) -> str | None:
    """Why a folder of this name is not searched (None: it is)."""
    if name in SKIPPED_NAMES:
        return f"{name} is never searched"
    if name.startswith("."):
        return "hidden folder"
    if name.lower() in TEST_NAMES:
        return "test folder"
    return None


def discover(top: Path) -> Discovery:
    """The roots and modules under ``top`` (a repository's working tree)."""
    top = top.resolve()
    folders: dict[str, Folder] = {}
    skipped: list[Skipped] = []
    notes: list[str] = []
    searched = 0
    for dirpath, dirnames, filenames in os.walk(top):
        searched += 1
        here = _relative(top, Path(dirpath))
        kept = []
        for name in sorted(dirnames):
            why = skip_reason(name)
            if why is None:
                kept.append(name)
            elif name not in SKIPPED_NAMES and _has_terraform(Path(dirpath) / name):
                skipped.append(Skipped(_join(here, name), why))
        dirnames[:] = kept
        files = sorted(f for f in filenames if f.endswith(TF_SUFFIXES))
        if files:
            folders[here] = _read(top, here, files, notes)
        if searched >= MAX_FOLDERS:
            notes.append(f"stopped after {MAX_FOLDERS} folders: run init on a smaller folder")
            break

    calls: dict[str, set[str]] = {}  # folder -> the local modules it calls
    todo = sorted(folders)
    seen = set(todo)
    while todo:
        here = todo.pop()
        calls[here] = set()
        for call in folders[here].facts.modules:
            target = _local_module(top, here, call.name, call.source, notes)
            if target is None:
                continue
            if target not in folders:  # a module in a folder the walk skips: read it all the same
                files = _terraform_files(top / target)
                if not files:
                    notes.append(f"{here}: module \"{call.name}\": {call.source} has no Terraform files")
                    continue
                folders[target] = _read(top, target, files, notes)
            calls[here].add(target)
            if target not in seen:
                seen.add(target)
                todo.append(target)

    callers: dict[str, set[str]] = {}
    for here, targets in calls.items():
        for target in targets:
            callers.setdefault(target, set()).add(here)
    walked = {f for f in folders if not any(_inside(f, s.path) for s in skipped)}
    roots, unused = [], []
    for path in sorted(walked - set(callers)):
        facts = folders[path].facts
        if not (facts.backend or facts.providers) and set(path.split("/")) & MODULE_FOLDER_NAMES:
            unused.append(path)
        elif set(path) & GLOB_CHARACTERS or any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in path):
            notes.append(f"{path}: a path with * or ? (glob characters) or a control character; not taken as a root")
        else:
            roots.append(Root(path, tuple(sorted(_closure(path, calls) - {path})), facts.backend,
                              tuple(dict.fromkeys(facts.providers))))
    modules = []
    for path in sorted(callers):
        facts = folders[path].facts
        configures = tuple(f"provider {p}" for p in dict.fromkeys(facts.providers)) + \
            ((f"backend {facts.backend.kind}",) if facts.backend else ())
        modules.append(Module(path, tuple(sorted(callers[path])), tuple(r.path for r in roots if path in r.modules),
                              configures))
    return Discovery(top, tuple(roots), tuple(modules), tuple(unused), tuple(skipped), tuple(notes), searched)


def _local_module(top: Path, here: str, name: str, source: str | None, notes: list[str]) -> str | None:
    """The folder a module call names, if it names one of this repository."""
    where = f"{here}: module \"{name}\""
    if source is None:
        notes.append(f"{where}: its source is not a plain string; not followed")
        return None
    if not source.startswith(("./", "../")):
        return None  # the registry, git, a URL, S3...: no folder of this repository
    target = posixpath.normpath(posixpath.join(here, source))
    if target == ".." or target.startswith("../"):
        notes.append(f"{where}: {source} is outside {top.name}; not followed")
        return None
    real = (top / target).resolve()
    if real != top and top not in real.parents:
        notes.append(f"{where}: {source} leads outside {top.name} (a symbolic link); not followed")
        return None
    if not real.is_dir():
        notes.append(f"{where}: {source} does not exist")
        return None
    return target


def _closure(start: str, calls: dict[str, set[str]]) -> set[str]:
    out, todo = {start}, [start]
    while todo:
        for target in calls.get(todo.pop(), ()):
            if target not in out:
                out.add(target)
                todo.append(target)
    return out


def _read(top: Path, here: str, files: list[str], notes: list[str]) -> Folder:
    facts = HclFacts()
    for name in files:
        path = top / here / name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                notes.append(f"{_join(here, name)}: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB; not read")
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            notes.append(f"{_join(here, name)}: cannot be read ({exc.strerror})")
            continue
        found = scan_json(text) if name.endswith(".json") else scan(text)
        facts = facts.merge(HclFacts(found.modules, found.providers, found.backend,
                                     tuple(f"{_join(here, name)}: {p}" for p in found.problems)))
    notes.extend(facts.problems)
    return Folder(here, tuple(files), facts)


def _terraform_files(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(TF_SUFFIXES))
    except OSError:
        return []


def _has_terraform(folder: Path, limit: int = 2000) -> bool:
    """Whether a skipped folder holds Terraform files (worth saying it was skipped); looks at a
    bounded number of entries."""
    for looked, (_, _, files) in enumerate(os.walk(folder)):
        if any(f.endswith(TF_SUFFIXES) for f in files):
            return True
        if looked >= limit:
            return False
    return False


def _relative(top: Path, path: Path) -> str:
    rel = path.relative_to(top).as_posix()
    return rel or "."


def _join(here: str, name: str) -> str:
    return name if here == "." else f"{here}/{name}"


def _inside(path: str, folder: str) -> bool:
    return folder == "." or path == folder or path.startswith(folder + "/")
