"""Packaging's pure parts on real files: source identity, local and git fetches, bundle layout."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from lambda_runtime.job.model import GitSource, PathSource
from lambda_runtime.packaging import sources
from lambda_runtime.packaging.bundle import build_bundle
from lambda_runtime.packaging.errors import PackagingError
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
