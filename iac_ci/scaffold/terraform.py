"""Finding a repository's Terraform roots: the folders ``terraform plan`` runs in.

A folder with ``*.tf`` (or ``*.tf.json``) files is either a root or a module. A folder that
another folder calls (``module "x" { source = "../modules/net" }``) is a **module**, whatever it
holds: a provider block in it does not make it plannable alone, and it is planned with every
root that uses it. A folder nobody calls is a **root** when it configures a backend (``backend``
or ``cloud``) or a provider; without either, it is a root too, unless it sits under a
``modules/`` folder (then it is an unused module: published for other repositories, or dead).

Only local sources (``./`` and ``../``, as Terraform defines them) name folders; registry and git
sources do not. A root's paths are its own folder and every local module it uses, transitively,
so a change to a shared module plans every root that uses it. They are the paths git reports in a
pull request, so a module reached through a symbolic link is named by its real folder (and the
link), a symbolically linked ``.tf`` file by its target; a folder whose ``.tf`` files are only
such targets is no root of its own. A root that holds other roots leaves their folders to them;
the top folder's root answers to its own Terraform files and to the top folders no other root
or module holds (``files/``, ``templates/``...). ``when.paths`` holds at most ``MAX_PATHS``
globs: past that, module folders are named by their common parent folder.

Which files: inside a git work tree, the ones git lists (tracked, and untracked but not
ignored): a ``build/`` or ``vendor/`` in ``.gitignore`` is no root. Outside one, every folder.
Never ``.git``, ``.terraform``, ``node_modules`` or hidden folders (``.terragrunt-cache``,
``.github``), nor test folders: a folder named ``test``, ``tests``, ``fixtures``... that holds
Terraform's own tests (``*.tftest.hcl``, ``*.tftest.json``) or Terratest's (``*_test.go``), or is
the ``tests`` folder of a Terraform folder (``terraform test``'s default). Those keep helper roots
that are not the repository's. A test-named folder without them, or with a backend block of its
own (``envs/test``), is searched like any other. A module that a root calls is read wherever it
is, even in one of those folders.
"""
from __future__ import annotations

import os
import posixpath
import stat
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, replace
from pathlib import Path

from iac_ci.scaffold.hcl import Backend, HclFacts, scan, scan_json
from lambda_runtime.github.selection import glob_match
from lambda_runtime.job.model import When

TF_SUFFIXES = (".tf", ".tf.json")
SKIPPED_NAMES = frozenset({".git", ".terraform", "node_modules"})
TEST_NAMES = frozenset({"test", "tests", "testdata", "test-data", "fixtures", "test-fixtures", "test_fixtures",
                        "__fixtures__"})
TEST_FILES = (".tftest.hcl", ".tftest.json", "_test.go")  # what makes a test-named folder a test folder
TERRAFORM_TESTS = "tests"  # terraform test's default test directory, beside the configuration it tests
MODULE_FOLDER_NAMES = frozenset({"modules", "module"})
GLOB_CHARACTERS = frozenset("*?")  # the only special characters of when.paths
# the top folder as a root: its own Terraform files (the rest of the top is not its business)
ROOT_FILES = ("*.tf", "*.tf.json", "*.tfvars", "*.tfvars.json", ".terraform.lock.hcl")
# the most globs an order's when.paths takes (the engine's model says, not this module)
MAX_PATHS: int = next(m.max_length for m in When.model_fields["paths"].metadata if hasattr(m, "max_length"))
MAX_FOLDERS = 20_000  # folders walked; a bigger tree is cut short, and said so
MAX_FILE_BYTES = 2 * 1024 * 1024
GIT_TIMEOUT = 120


@dataclass(frozen=True)
class Folder:
    path: str  # relative to the repository, POSIX; "." is the repository itself
    files: tuple[str, ...]
    facts: HclFacts
    linked: tuple[str, ...] = ()  # the real paths of its symbolically linked files (in the repository)


@dataclass(frozen=True)
class Root:
    path: str
    modules: tuple[str, ...]  # the local modules it uses, transitively (sorted; real folders)
    backend: Backend | None
    providers: tuple[str, ...]
    own_paths: tuple[str, ...]  # the globs of its own folder's files
    other_paths: tuple[str, ...]  # the globs of its modules and linked files elsewhere

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
        """The globs of the changes that concern it (its when.paths)."""
        return self.own_paths + self.other_paths


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
    searched: int  # folders searched
    git: bool  # the files were git's list, not a walk of the folders

    def module(self, path: str) -> Module | None:
        return next((m for m in self.modules if m.path == path), None)


@dataclass(frozen=True)
class Listing:
    """The files ``discover`` looks at: git's list inside a work tree, else a walk of the folders."""

    files: tuple[str, ...]  # relative, POSIX; none under a pruned folder (.git, .terraform, hidden ones)
    folders: frozenset[str]  # every folder seen: "." and pruned ones too
    searched: frozenset[str]  # the folders not pruned
    pruned: tuple[Skipped, ...]  # the pruned folders that hold Terraform files
    git: bool
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Graph:
    """The module calls as Terraform follows them: by the path a call names, a symbolic link kept
    (``modules/net/../x`` is ``modules/x`` to Terraform, wherever the link leads); ``real`` is each
    such folder's real path in the repository, the one git reports changes under."""

    folders: dict[str, Folder]
    calls: dict[str, set[str]]  # folder -> the folders it calls
    real: dict[str, str]


def label(path: str) -> str:
    """A folder as messages and comments name it."""
    return "the top folder" if path == "." else path


def skip_reason(name: str) -> str | None:
    """Why a folder of this name is never searched (None: it is). Test folders are told by what
    they hold, not by their name alone: see ``discover``."""
    if name in SKIPPED_NAMES:
        return f"{name} is never searched"
    if name.startswith("."):
        return "hidden folder"
    return None


def discover(top: Path) -> Discovery:
    """The roots and modules under ``top`` (a repository's working tree)."""
    top = top.resolve()
    listing = list_files(top)
    notes = list(listing.notes)
    listed = _terraform_files_by_folder(top, listing.files)
    folders: dict[str, Folder] = {}  # read when needed: what is under a test folder only when a root calls it
    tests = _test_folders(listing, listed,
                          lambda here: _read_once(top, here, listed[here], folders).facts.backend is not None)
    walked = {f for f in listed if not _under_any(f, tests)}
    for here in sorted(walked):
        _read_once(top, here, listed[here], folders)
    graph = _follow(top, folders, listed, walked, notes)
    for here in sorted(graph.calls):
        notes.extend(folders[here].facts.problems)
    callers: dict[str, set[str]] = {}  # a module's real folder -> the real folders that call it
    for here, targets in graph.calls.items():
        for target in targets:
            callers.setdefault(graph.real[target], set()).add(graph.real[here])
    root_paths, unused = _classify(sorted(walked - set(callers)), graph, notes)

    tree = _tree(listing.folders)
    root_set = frozenset(root_paths)
    # what the top folder's root leaves alone: roots, modules (by either name), their linked files' homes
    owned = root_set | set(callers) | set(unused) | {t for targets in graph.calls.values() for t in targets} | \
        {_parent(f) for here in graph.calls for f in folders[here].linked}
    holding = {above for r in root_paths for above in _folders_above(r)}  # the folders that other roots are in
    roots = []
    for path in root_paths:
        own = _top_globs(tree, owned) if path == "." else _folder_globs(path, root_set, holding, tree)
        roots.append(_root(top, path, own, graph, notes))
    by_real: dict[str, Folder] = {}  # a module's real folder -> its files, however it is reached
    for here in sorted(graph.calls):
        by_real.setdefault(graph.real[here], folders[here])
    modules = [_module(path, by_real[path].facts, sorted(callers[path]), roots) for path in sorted(callers)]
    holding_tf = {*listed, *folders}  # the folders with Terraform files: listed, or read for a root
    skipped = sorted([*listing.pruned, *(Skipped(t, "test folder") for t in tests if _holds_terraform(t, holding_tf))],
                     key=lambda s: s.path)
    searched = sum(1 for f in listing.searched if not _under_any(f, tests))
    return Discovery(top, tuple(roots), tuple(modules), tuple(unused), tuple(skipped), tuple(notes), searched,
                     listing.git)


def _classify(candidates: list[str], graph: _Graph, notes: list[str]) -> tuple[list[str], list[str]]:
    """The folders no one calls, as roots and unused modules (the rest are noted)."""
    folders = graph.folders
    linked_from: dict[str, set[str]] = {}  # a file -> the folders that hold a symbolic link to it
    for here in graph.calls:
        for target in folders[here].linked:
            linked_from.setdefault(target, set()).add(here)
    roots, unused = [], []
    for path in candidates:
        facts = folders[path].facts
        linking = _linked_only(folders[path], linked_from)
        if linking:
            notes.append(f"{path}: its Terraform files are the targets of symbolic links in {', '.join(linking)}; "
                         "not taken as a root")
        elif not (facts.backend or facts.providers) and set(path.split("/")) & MODULE_FOLDER_NAMES:
            unused.append(path)
        elif set(path) & GLOB_CHARACTERS or any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in path):
            notes.append(f"{path}: a path with * or ? (glob characters) or a control character; not taken as a root")
        else:
            roots.append(path)
    return roots, unused


def _root(top: Path, path: str, own: list[str], graph: _Graph, notes: list[str]) -> Root:
    """A root with its modules (real folders) and paths: ``own``, then its modules', then the
    files and links git reports for what it reaches through symbolic links."""
    lexical = _closure(path, graph.calls)
    modules = tuple(sorted({graph.real[k] for k in lexical} - {path}))
    extras = {f for k in lexical for f in graph.folders[k].linked} | \
        {link for k in lexical if graph.real[k] != k for link in _links_along(top, k)}
    other, collapsed = _other_paths(own, modules, sorted(extras))
    if collapsed:
        notes.append(f"{label(path)} uses {len(modules)} module folders: more paths than when.paths takes "
                     f"({MAX_PATHS}), so it names those under {', '.join(collapsed)} by "
                     f"{', '.join(c + '/**' for c in collapsed)}")
    facts = graph.folders[path].facts
    return Root(path, modules, facts.backend, tuple(dict.fromkeys(facts.providers)), tuple(own), other)


def _module(path: str, facts: HclFacts, used_by: list[str], roots: list[Root]) -> Module:
    configures = tuple(f"provider {p}" for p in dict.fromkeys(facts.providers)) + \
        ((f"backend {facts.backend.kind}",) if facts.backend else ())
    return Module(path, tuple(used_by), tuple(r.path for r in roots if path in r.modules), configures)


# ---- which files -------------------------------------------------------------------------------
def list_files(top: Path) -> Listing:
    """The files of ``top`` as git sees them (inside a work tree), else as the file system has them."""
    notes: list[str] = []
    listed = _git_files(top, notes)
    return _walk(top, notes) if listed is None else _from_git(top, listed, notes)


def _git_files(top: Path, notes: list[str]) -> list[str] | None:
    """``git ls-files`` of ``top``: tracked files and untracked ones that are not ignored (None:
    not a git work tree, or no git)."""
    try:
        done = subprocess.run(["git", "-C", str(top), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                              capture_output=True, timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"git ls-files failed ({exc}); walked the folders instead")
        return None
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", errors="replace").strip()
        if "not a git repository" not in error:
            notes.append(f"git ls-files failed ({error[:200]}); walked the folders instead")
        return None
    return [os.fsdecode(p) for p in done.stdout.split(b"\0") if p]


def _from_git(top: Path, listed: list[str], notes: list[str]) -> Listing:
    files: list[str] = []
    folders, searched = {"."}, {"."}
    pruned: dict[str, Skipped] = {}
    for rel in listed:
        if rel.endswith("/"):  # an untracked repository of its own
            notes.append(f"{rel.rstrip('/')}: another git repository inside this one; not searched")
            continue
        try:
            mode = os.lstat(top / rel).st_mode
        except OSError:  # tracked, but deleted from the work tree
            continue
        if stat.S_ISDIR(mode):
            notes.append(f"{rel}: a git submodule; not searched")
            continue
        parts = rel.split("/")
        above = _folders_above(rel)
        folders.update(above)
        cut = next((i for i, name in enumerate(parts[:-1]) if skip_reason(name)), None)
        if cut is None:
            searched.update(above)
            files.append(rel)
            continue
        searched.update(above[:cut])
        why = skip_reason(parts[cut])
        if parts[cut] not in SKIPPED_NAMES and why and rel.endswith(TF_SUFFIXES):
            pruned.setdefault(above[cut], Skipped(above[cut], why))
    if not listed:
        notes.append(f"git lists no file in {top.name} (is the folder ignored?)")
    return Listing(tuple(files), frozenset(folders), frozenset(searched), tuple(pruned.values()), True, tuple(notes))


def _walk(top: Path, notes: list[str]) -> Listing:
    files: list[str] = []
    folders: set[str] = set()
    hidden: set[str] = set()  # pruned, known by name only (a root's neighbours)
    pruned: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = _relative(top, Path(dirpath))
        folders.add(here)
        kept = []
        for name in sorted(dirnames):
            path, why = Path(dirpath) / name, skip_reason(name)
            if path.is_symlink():  # as git lists it: a file (os.walk does not follow it)
                files.append(_join(here, name))
            elif why is None:
                kept.append(name)
            elif name not in SKIPPED_NAMES:
                hidden.add(_join(here, name))
                if _has_terraform(path):
                    pruned.append(Skipped(_join(here, name), why))
        dirnames[:] = kept
        files.extend(_join(here, f) for f in sorted(filenames))
        if len(folders) >= MAX_FOLDERS:
            notes.append(f"stopped after {MAX_FOLDERS} folders: run init on a smaller folder")
            break
    return Listing(tuple(files), frozenset(folders | hidden), frozenset(folders), tuple(pruned), False, tuple(notes))


def _terraform_files_by_folder(top: Path, files: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rel in files:
        if rel.endswith(TF_SUFFIXES) and not (top / rel).is_dir():
            here, _, name = rel.rpartition("/")
            out.setdefault(here or ".", []).append(name)
    return {here: sorted(names) for here, names in sorted(out.items())}


def _test_folders(listing: Listing, listed: Mapping[str, list[str]], has_backend: Callable[[str], bool]) -> list[str]:
    """The test folders (topmost only): named like one, holding test files (or being the ``tests``
    folder of a Terraform folder), and without a backend block of their own. File names tell them,
    so nothing under them is read: only a candidate's own files, for ``has_backend``, and only then."""
    with_tests = {above for rel in listing.files if rel.endswith(TEST_FILES) for above in _folders_above(rel)}
    out: list[str] = []
    for path in sorted(listing.searched):
        name = posixpath.basename(path).lower()
        if path == "." or name not in TEST_NAMES or _under_any(path, out):
            continue
        if not (path in with_tests or (name == TERRAFORM_TESTS and _parent(path) in listed)):
            continue
        if path in listed and has_backend(path):
            continue  # envs/test: a root named like a test folder
        out.append(path)
    return out


def _holds_terraform(path: str, folders: Iterable[str]) -> bool:
    return any(_inside(f, path) for f in folders)


# ---- modules ----------------------------------------------------------------------------------
def _follow(top: Path, folders: dict[str, Folder], listed: Mapping[str, list[str]], walked: set[str],
            notes: list[str]) -> _Graph:
    """The module calls from the walked folders on, transitively. Reads the called folders the
    walk did not (into ``folders``): by the files ``listed`` names, else (a folder the listing
    prunes) by the ones it holds."""
    calls: dict[str, set[str]] = {}
    real = {f: f for f in walked}
    todo = sorted(walked)
    seen = set(todo)
    while todo:
        here = todo.pop()
        calls[here] = set()
        for call in folders[here].facts.modules:
            found = _local_module(top, here, call.name, call.source, notes)
            if found is None:
                continue
            target, real_path = found
            if target not in folders:  # a module in a folder the walk skips: read it all the same
                files = listed.get(target) or _terraform_files(top / target)
                if not files:
                    notes.append(f"{here}: module \"{call.name}\": {call.source} has no Terraform files")
                    continue
                folders[target] = _read(top, target, files)
            real.setdefault(target, real_path)
            calls[here].add(target)
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return _Graph(folders, calls, real)


def _local_module(top: Path, here: str, name: str, source: str | None,
                  notes: list[str]) -> tuple[str, str] | None:
    """The folder a module call names, if it names one of this repository: as Terraform names it,
    and its real path (they differ through a symbolic link)."""
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
    if not _within(top, real):
        notes.append(f"{where}: {source} leads outside {top.name} (a symbolic link); not followed")
        return None
    if not real.is_dir():
        notes.append(f"{where}: {source} does not exist")
        return None
    return target, _relative(top, real)


def _closure(start: str, calls: dict[str, set[str]]) -> set[str]:
    out, todo = {start}, [start]
    while todo:
        for target in calls.get(todo.pop(), ()):
            if target not in out:
                out.add(target)
                todo.append(target)
    return out


# ---- symbolic links ---------------------------------------------------------------------------
def _linked_only(folder: Folder, linked_from: dict[str, set[str]]) -> list[str]:
    """The folders that link to this one's Terraform files, when every one of them is linked
    from elsewhere (then it is their files' home, not a root); else nothing."""
    users = [linked_from.get(_join(folder.path, name), set()) - {folder.path} for name in folder.files]
    return sorted(set[str]().union(*users)) if users and all(users) else []


def _links_along(top: Path, path: str) -> list[str]:
    """The symbolic links on the way to ``path`` (``modules/net`` of ``modules/net/sub``): git
    reports a change of the link itself there."""
    parts = path.split("/")
    return [p for p in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) if (top / p).is_symlink()]


# ---- a root's paths ---------------------------------------------------------------------------
def _tree(folders: Iterable[str]) -> dict[str, list[str]]:
    """Each folder's subfolders (sorted), never searched ones left out."""
    out: dict[str, list[str]] = {}
    for folder in sorted(folders):
        if folder != "." and posixpath.basename(folder) not in SKIPPED_NAMES:
            out.setdefault(_parent(folder), []).append(folder)
    return out


def _folder_globs(folder: str, roots: Set[str], holding: Set[str], tree: dict[str, list[str]]) -> list[str]:
    """A root's own globs: its whole folder, or, when other roots are inside it (``holding``), its
    files and the subfolders that are no root's (those holding roots deeper down, the same way)."""
    if folder not in holding:
        return [f"{folder}/**"]
    out = [f"{folder}/*"]
    for child in tree.get(folder, ()):
        if child not in roots:
            out += _folder_globs(child, roots, holding, tree)
    return out


def _top_globs(tree: dict[str, list[str]], owned: Iterable[str]) -> list[str]:
    """The top folder's root: its Terraform files, and each top folder that holds no other root or
    module and is not hidden (``files/`` of a ``templatefile()``)."""
    busy = {path.split("/")[0] for path in owned if path != "."}
    return [*ROOT_FILES, *(f"{c}/**" for c in tree.get(".", ()) if not c.startswith(".") and c not in busy)]


def _other_paths(own: list[str], modules: Iterable[str], extras: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The globs beyond a root's own: its modules' folders (a module inside a folder already
    listed adds nothing) and its linked files. Past ``MAX_PATHS``, module folders are named by
    their deepest common parent, one parent at a time; returns those parents too."""
    kept: list[str] = []
    for module in modules:  # sorted: a folder comes before the folders inside it
        if not _covered(module, own + [f"{k}/**" for k in kept]):
            kept.append(module)
    collapsed: list[str] = []
    while True:
        globs = own + [f"{k}/**" for k in kept]
        files = [e for e in extras if not any(glob_match(g, e) for g in globs)]
        over = len(globs) + len(files) > MAX_PATHS and len(own) < MAX_PATHS  # else no module is to blame
        parent = _shared_parent(kept) if over else None
        if parent is None:
            return tuple(globs[len(own):] + files), [c for c in collapsed if c in kept]
        kept = sorted([k for k in kept if not _inside(k, parent)] + [parent])
        collapsed.append(parent)


def _shared_parent(folders: list[str]) -> str | None:
    """The deepest folder (never the top) that holds two or more of ``folders``, the one holding
    most among the deepest."""
    counts = Counter(above for f in folders for above in _folders_above(f))
    shared = [f for f, n in counts.items() if n >= 2]
    return max(sorted(shared), key=lambda f: (f.count("/"), counts[f]), default=None)


def _covered(folder: str, globs: list[str]) -> bool:
    return any(g.endswith("/**") and _inside(folder, g.removesuffix("/**")) for g in globs)


# ---- reading ----------------------------------------------------------------------------------
def _read(top: Path, here: str, files: list[str]) -> Folder:
    """A folder's facts, what it could not read among their problems. A symbolically linked file
    is read when it leads to a file of the repository (and kept in ``linked``), else not."""
    facts, linked, problems = HclFacts(), [], []
    for name in files:
        rel = _join(here, name)
        path = top / here / name
        if path.is_symlink():
            real = path.resolve()
            if not _within(top, real):
                problems.append(f"{rel}: a symbolic link to outside {top.name}; not read")
                continue
            linked.append(_relative(top, real))
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{rel}: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB; not read")
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc.strerror})")
            continue
        found = scan_json(text) if name.endswith(".json") else scan(text)
        facts = facts.merge(HclFacts(found.modules, found.providers, found.backend,
                                     tuple(f"{rel}: {p}" for p in found.problems)))
    return Folder(here, tuple(files), replace(facts, problems=facts.problems + tuple(problems)), tuple(linked))


def _read_once(top: Path, here: str, files: list[str], folders: dict[str, Folder]) -> Folder:
    """``here`` read into ``folders``, unless it already is: the test folder check reads a candidate's
    own files, and a folder is read once."""
    if here not in folders:
        folders[here] = _read(top, here, files)
    return folders[here]


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


# ---- paths ------------------------------------------------------------------------------------
def _relative(top: Path, path: Path) -> str:
    rel = path.relative_to(top).as_posix()
    return rel or "."


def _within(top: Path, real: Path) -> bool:
    return real == top or top in real.parents


def _join(here: str, name: str) -> str:
    return name if here == "." else f"{here}/{name}"


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "."


def _folders_above(path: str) -> list[str]:
    """The folders ``path`` is in, the top left out (``a/b/c``: ``a``, ``a/b``)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _under_any(path: str, folders: Iterable[str]) -> bool:
    return any(_inside(path, f) for f in folders)


def _inside(path: str, folder: str) -> bool:
    return folder == "." or path == folder or path.startswith(folder + "/")
