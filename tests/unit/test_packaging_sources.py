"""Packaging's pure parts on real files: source identity, local and git fetches, bundle layout, and the
sources' size caps against real zip bombs (from the embedded S3) and real git repositories."""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from support.bombs import lie_about_sizes, zeros_zip

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.job.model import GitSource, PathSource, S3Source
from lambda_runtime.packaging import sources
from lambda_runtime.packaging.bundle import build_bundle
from lambda_runtime.packaging.errors import PackagingError, SourceTooLarge
from lambda_runtime.schema.contract import BUNDLE_CODE_DIR, BUNDLE_MANIFEST, BUNDLE_SECRETS, Manifest


def git_source(url: str, ref: str | None = None) -> GitSource:
    return GitSource.model_validate({"git": {"url": url, **({"ref": ref} if ref else {})}})


def test_source_key_fills_the_default_ref_so_equal_sources_share_one_fetch() -> None:
    assert sources.source_key(git_source("file:///r"), "abc") == sources.source_key(git_source("file:///r", "abc"),
                                                                                     None)
    assert sources.source_key(git_source("file:///r"), "abc") != sources.source_key(git_source("file:///r"), "def")
    assert sources.source_key(None, "abc") == "none"


def test_fetch_git_checks_out_the_exact_commit_without_history(git_repo: Path, tmp_path: Path) -> None:
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=git_repo, capture_output=True,
                           text=True, check=True).stdout.strip()
    dest = tmp_path / "out"
    dest.mkdir()
    assert sources.fetch_git(f"file://{git_repo}", first, dest) == first
    assert (dest / "infra" / "main.tf").read_text() == "# v1\n"
    assert not (dest / ".git").exists()


def test_fetch_git_error_names_the_url_and_masks_the_token(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(PackagingError) as err:
        sources.fetch_git(f"file://{tmp_path}/missing", "main", dest, token="s3cr3t-token-value")
    assert "missing" in str(err.value) and "s3cr3t-token-value" not in str(err.value)


def test_local_source_is_copied_without_its_git_directory(git_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    sources.fetch(PathSource(path=str(git_repo)), dest, clients=None, resolver=None)  # type: ignore[arg-type]
    assert (dest / "infra" / "main.tf").read_text() == "# v2\n" and not (dest / ".git").exists()


def test_bundle_holds_manifest_secrets_and_code(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "infra").mkdir(parents=True)
    (code / "infra" / "main.tf").write_text("# tf\n")
    manifest = Manifest(run_id="r1", order="plan", trace_id="r1:1", flow_id="u:r1-x", cmds=["true"], timeout=60,
                        target="lambda")
    out = build_bundle(manifest, code, b"ENC", tmp_path / "b.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert BUNDLE_MANIFEST in names and BUNDLE_SECRETS in names
        assert f"{BUNDLE_CODE_DIR}/infra/main.tf" in names
        assert json.loads(tar.extractfile(BUNDLE_MANIFEST).read())["cmds"] == ["true"]  # type: ignore[union-attr]
        assert tar.getmember(BUNDLE_SECRETS).mode == 0o600


# ---- size caps: zip bombs, lying archives, big repositories (real archives, real git) ----------
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    honest = zeros_zip(root / "honest.zip", 300 * MiB)
    liar = lie_about_sizes(zeros_zip(root / "liar.zip", 300 * MiB), 1000)
    return {"honest": honest, "liar": liar}


@pytest.fixture()
def bucket(clients: AwsClients) -> str:
    name = "src-" + secrets.token_hex(4)
    clients.s3.create_bucket(Bucket=name)
    return name


def put(clients: AwsClients, bucket: str, path: Path, key: str | None = None) -> str:
    key = key or path.name
    clients.s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def s3_fetch(clients: AwsClients, uri: str, dest: Path, limits: sources.SourceLimits) -> None:
    sources.fetch(S3Source(s3=uri), dest, clients=clients, resolver=None, limits=limits,  # type: ignore[arg-type]
                  order="deploy")


def leftovers(dest: Path) -> list[str]:
    """Everything under dest's parent but dest itself, which must be empty."""
    return sorted(str(p.relative_to(dest.parent)) for p in dest.parent.rglob("*") if p != dest)


def test_a_zip_bomb_is_refused_from_its_central_directory_before_extracting(clients, bucket, bombs,
                                                                            tmp_path) -> None:
    uri = put(clients, bucket, bombs["honest"])
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        s3_fetch(clients, uri, dest, sources.SourceLimits(max_bytes=200 * MiB))
    assert str(err.value) == f"order 'deploy': source {uri} expands to 300 MiB, past 200 MiB (max_source_bytes)"
    assert err.value.cap == "max_source_bytes" and err.value.order == "deploy"
    assert bombs["honest"].stat().st_size < 400 * 1024 and leftovers(dest) == []


def test_a_zip_bomb_under_the_size_cap_is_refused_by_its_compression_ratio(clients, bucket, bombs,
                                                                           tmp_path) -> None:
    uri = put(clients, bucket, bombs["honest"])
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        s3_fetch(clients, uri, dest, sources.SourceLimits())  # 512 MiB: the size passes, the ratio does not
    assert f"source {uri}: member 'zeros.bin' expands more than 200 times its compressed size" in str(err.value)
    assert leftovers(dest) == []


def test_a_central_directory_lying_about_sizes_is_stopped_at_the_cap_while_extracting(
        clients, bucket, bombs, tmp_path, monkeypatch) -> None:
    with zipfile.ZipFile(bombs["liar"]) as zf:
        assert [i.file_size for i in zf.infolist()] == [1000]  # what the archive claims
    uri = put(clients, bucket, bombs["liar"])
    dest = tmp_path / "work" / "src"
    written: list[int] = []
    real_open = open

    def spying_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real_open(file, mode, *args, **kwargs)
        if mode == "wb" and Path(file).parent == dest:  # the member's file: record its size on close
            close = handle.close

            def closing() -> None:
                close()
                written.append(Path(file).stat().st_size)
            handle.close = closing
        return handle

    monkeypatch.setattr(sources, "open", spying_open, raising=False)
    cap = 20 * MiB
    with pytest.raises(SourceTooLarge) as err:
        s3_fetch(clients, uri, dest, sources.SourceLimits(max_bytes=cap))
    assert str(err.value) == f"order 'deploy': source {uri} expands past 20 MiB (max_source_bytes)"
    assert written and written[0] <= cap  # counted bytes written, not trusting the header
    assert leftovers(dest) == []


def test_a_lying_member_under_the_cap_is_refused_by_its_ratio_while_extracting(clients, bucket, bombs,
                                                                               tmp_path) -> None:
    uri = put(clients, bucket, bombs["liar"])
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        s3_fetch(clients, uri, dest, sources.SourceLimits())
    assert "member 'zeros.bin' expands more than 200 times its compressed size" in str(err.value)
    assert leftovers(dest) == []


def test_a_member_longer_than_declared_but_under_every_cap_is_refused_as_corrupt(clients, bucket,
                                                                                 tmp_path) -> None:
    archive = tmp_path / "short.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("main.tf", "resource {}\n" * 100)
    uri = put(clients, bucket, lie_about_sizes(archive, 10))
    dest = tmp_path / "work" / "src"
    with pytest.raises(PackagingError, match=r"is corrupt: member 'main.tf' declares 10 bytes and holds 1200"):
        s3_fetch(clients, uri, dest, sources.SourceLimits())
    assert leftovers(dest) == []


def many_members(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"f{i}.txt", b"")
    return path


def test_too_many_members_are_refused_before_zipfile_reads_the_directory(clients, bucket, tmp_path,
                                                                         monkeypatch) -> None:
    archive = many_members(tmp_path / "many.zip", 50)
    data = bytearray(archive.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 1, 1)  # the end record claims a single member
    archive.write_bytes(bytes(data))
    uri = put(clients, bucket, archive)
    monkeypatch.setattr(sources.zipfile, "ZipFile", None)  # never reached: the walk counted first
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        s3_fetch(clients, uri, dest, sources.SourceLimits(max_files=10))
    assert str(err.value) == f"order 'deploy': source {uri} has more than 10 members (max_source_files)"
    assert err.value.cap == "max_source_files" and leftovers(dest) == []


def test_a_zip_within_its_caps_is_extracted_with_its_executable_bits(clients, bucket, tmp_path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mod/main.tf", "resource {}\n")
        script = zipfile.ZipInfo("mod/run.sh")
        script.external_attr = (0o100755 << 16)
        zf.writestr(script, "#!/bin/sh\necho ok\n")
        zf.writestr("mod/empty/", b"")
    uri = put(clients, bucket, archive)
    dest = tmp_path / "work" / "src"
    s3_fetch(clients, uri, dest, sources.SourceLimits(max_files=3, max_bytes=400))  # the object: 346 bytes
    assert (dest / "mod" / "main.tf").read_text() == "resource {}\n" and (dest / "mod" / "empty").is_dir()
    assert os.access(dest / "mod" / "run.sh", os.X_OK) and not os.access(dest / "mod" / "main.tf", os.X_OK)


def test_an_object_larger_than_the_cap_is_refused_before_it_is_downloaded(clients, bucket, tmp_path,
                                                                          monkeypatch) -> None:
    uri = put(clients, bucket, many_members(tmp_path / "big.zip", 30))  # about 3 KiB
    reads: list[int] = []
    real_get = clients.s3.get_object

    def get_object(**kw):  # type: ignore[no-untyped-def]
        response = real_get(**kw)
        body_read = response["Body"].read
        response["Body"].read = lambda n=None: reads.append(n) or body_read(n)
        return response
    monkeypatch.setattr(clients.s3, "get_object", get_object)
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge, match=rf"source {uri} is \d(\.\d)? KiB, past 1 KiB \(max_source_bytes\)"):
        s3_fetch(clients, uri, dest, sources.SourceLimits(max_bytes=1024))
    assert reads == [] and leftovers(dest) == []


def test_a_body_longer_than_its_content_length_is_cut_at_the_cap(clients, bucket, tmp_path, monkeypatch) -> None:
    uri = put(clients, bucket, many_members(tmp_path / "big.zip", 30))
    real_get = clients.s3.get_object
    monkeypatch.setattr(clients.s3, "get_object", lambda **kw: {**real_get(**kw), "ContentLength": 10})
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge, match=rf"source {uri} is larger than 1 KiB \(max_source_bytes\)"):
        s3_fetch(clients, uri, dest, sources.SourceLimits(max_bytes=1024))
    assert leftovers(dest) == []


def commit_files(repo: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "big"], cwd=repo, check=True, env=env)


def git_fetch(repo: Path, dest: Path, limits: sources.SourceLimits) -> None:
    sources.fetch(git_source(f"file://{repo}", "main"), dest, clients=None, resolver=None,  # type: ignore[arg-type]
                  limits=limits, order="plan")


def test_a_repository_whose_fetch_passes_the_cap_is_stopped(git_repo: Path, tmp_path: Path) -> None:
    commit_files(git_repo, {"blob.bin": os.urandom(8 * MiB)})  # incompressible: the pack is 8 MiB too
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        git_fetch(git_repo, dest, sources.SourceLimits(max_bytes=2 * MiB))
    assert str(err.value) == f"order 'plan': source file://{git_repo} fetches past 2 MiB (max_source_bytes)"
    assert leftovers(dest) == []


def test_a_commit_whose_tree_passes_the_cap_is_refused_before_its_checkout(git_repo: Path, tmp_path: Path) -> None:
    commit_files(git_repo, {"zeros.bin": bytes(64 * MiB)})  # a 64 KiB pack that checks out to 64 MiB
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge) as err:
        git_fetch(git_repo, dest, sources.SourceLimits(max_bytes=8 * MiB))
    assert str(err.value) == f"order 'plan': source file://{git_repo} checks out past 8 MiB (max_source_bytes)"
    assert leftovers(dest) == []


def test_a_commit_with_too_many_files_is_refused_before_its_checkout(git_repo: Path, tmp_path: Path) -> None:
    commit_files(git_repo, {f"mods/m{i}.tf": b"" for i in range(20)})
    dest = tmp_path / "work" / "src"
    with pytest.raises(SourceTooLarge, match=r"checks out more than 10 files \(max_source_files\)"):
        git_fetch(git_repo, dest, sources.SourceLimits(max_files=10))
    assert leftovers(dest) == []


def test_a_repository_within_its_caps_is_checked_out(git_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "work" / "src"
    git_fetch(git_repo, dest, sources.SourceLimits(max_files=1, max_bytes=MiB))  # a 5-byte tree
    assert (dest / "infra" / "main.tf").read_text() == "# v2\n"


def test_the_watcher_kills_a_command_as_soon_as_its_directory_passes_the_limit(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(sources._OverCap):  # noqa: SLF001 (the mechanism both git steps use)
        sources._run_watched(["sh", "-c", "head -c 1073741824 /dev/zero > big; sleep 30"], cwd=tmp_path,
                             env=dict(os.environ), limit=16 * MiB)
    assert time.monotonic() - began < 10  # neither the 1 GiB write nor the sleep ran to the end
    assert (tmp_path / "big").stat().st_size < 1024 * MiB
