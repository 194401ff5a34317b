"""Preparing an order: everything that happens before its first command runs.

The bundle is fetched and unpacked, its manifest checked against the payload, its secrets
decrypted, the working directory and the declared inputs put in place and the commands'
environment built. Any problem here is an ``OrderFailure``: the order fails without a single
command having run, which is always safer than failing halfway through an apply.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lambda_runtime import sops
from lambda_runtime.mask_digests import DigestMasker, DigestSet
from lambda_runtime.schema.contract import (
    BUNDLE_CODE_DIR,
    BUNDLE_MANIFEST,
    BUNDLE_SECRETS,
    ROLE_KEYS,
    Manifest,
    WorkerPayload,
)
from lambda_runtime.worker.archive import extract_under, relative_path, unpack_bundle
from lambda_runtime.worker.errors import OrderFailure, TransferError
from lambda_runtime.worker.log import OrderLog
from lambda_runtime.worker.transfer import http_get

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Prepared:
    """What the commands need: the checked manifest, where to run and the environment to run with."""

    manifest: Manifest
    workdir: Path
    env: dict[str, str]


def prepare(payload: WorkerPayload, tmp: Path, log: OrderLog) -> Prepared:
    """Bundle, secrets, working directory and inputs: all before a single command runs."""
    log.note(f"order {payload.order} of run {payload.run_id}, attempt {payload.attempt}")
    raw_manifest = _fetch_bundle(payload, tmp)
    manifest = _load_manifest(raw_manifest, payload)
    secrets = _load_secrets(_fetch_secrets(payload, tmp), tmp, manifest)
    log.add_secrets(list(secrets.values()), payload_urls(payload), digests=_run_digests(payload, tmp))
    workdir = _workdir(tmp, manifest)
    _place_inputs(payload, manifest, workdir, tmp, log)
    return Prepared(manifest, workdir, _command_env(manifest, secrets, tmp))


def _fetch_bundle(payload: WorkerPayload, tmp: Path) -> bytes:
    """Download the bundle, unpack ``code/`` into ``<tmp>/code`` and return the manifest. Code is
    unpacked with ``<tmp>/code`` as the boundary, so nothing in the bundle (not even a link) can
    reach the worker's own files next to it; anything else in the archive (a secrets file in an
    old or forged bundle included) is ignored: credentials only ever arrive from the dispatch."""
    archive = tmp / "bundle.tar.gz"
    try:
        http_get(payload.bundle_url, archive)
    except TransferError as exc:
        raise OrderFailure(f"could not download the order's bundle: {exc}") from None
    code = tmp / BUNDLE_CODE_DIR
    code.mkdir()
    try:
        manifest, _ignored = unpack_bundle(archive, code)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OrderFailure(f"the order's bundle is not a readable gzip tar: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)
    if manifest is None:
        raise OrderFailure(f"the order's bundle has no {BUNDLE_MANIFEST}")
    return manifest


def _run_digests(payload: WorkerPayload, tmp: Path) -> DigestMasker | None:
    """The run's other secrets, as salted digests only: masked in this order's log although this
    order never holds them (it may print an artifact or file another order wrote)."""
    if not payload.mask_url:
        return None
    path = tmp / "mask.json"
    try:
        http_get(payload.mask_url, path)
        return DigestMasker(DigestSet.from_json(path.read_bytes()))
    except (TransferError, ValueError) as exc:
        raise OrderFailure(f"could not load the run's masking digests: {exc}") from None
    finally:
        path.unlink(missing_ok=True)


def _fetch_secrets(payload: WorkerPayload, tmp: Path) -> bytes | None:
    """The credentials the orchestrator minted for this dispatch (sops ciphertext), if any."""
    if not payload.secrets_url:
        return None
    path = tmp / BUNDLE_SECRETS
    try:
        http_get(payload.secrets_url, path)
        return path.read_bytes()
    except TransferError as exc:
        raise OrderFailure(f"could not download the order's credentials: {exc}") from None
    finally:
        path.unlink(missing_ok=True)


def _load_manifest(raw: bytes, payload: WorkerPayload) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise OrderFailure(f"the bundle's {BUNDLE_MANIFEST} is invalid: {validation_summary(exc)}") from None
    if (manifest.run_id, manifest.order) != (payload.run_id, payload.order):
        raise OrderFailure(
            f"the bundle belongs to order {manifest.order!r} of run {manifest.run_id!r}, "
            f"not to order {payload.order!r} of run {payload.run_id!r}"
        )
    return manifest


def _load_secrets(encrypted: bytes | None, tmp: Path, manifest: Manifest) -> dict[str, str]:
    """Decrypt with the KMS context pinned to this run and order, so a secrets file copied from
    another order's bundle is refused instead of handed to these commands."""
    values: dict[str, str] = {}
    if encrypted is not None:
        path = tmp / BUNDLE_SECRETS  # sops wants a path; the file is ciphertext and removed right after
        path.write_bytes(encrypted)
        try:
            values = sops.decrypt(path, expected_context={"run_id": manifest.run_id, "order": manifest.order})
        except (sops.SopsError, ValueError, OSError, subprocess.SubprocessError) as exc:
            raise OrderFailure(f"could not decrypt the order's secrets: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
    missing = [name for name in manifest.secret_env if name not in values]
    if manifest.has_role:
        missing += [key for key in ROLE_KEYS[:2] if key not in values]
    if missing:
        raise OrderFailure("the order's secrets file lacks: " + ", ".join(sorted(set(missing))))
    return values


def _workdir(tmp: Path, manifest: Manifest) -> Path:
    code = tmp / BUNDLE_CODE_DIR
    root = code.resolve()
    workdir = (code / (manifest.dir or "")).resolve()
    if not workdir.is_relative_to(root):
        raise OrderFailure(f"the order's dir {manifest.dir!r} leaves the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    if not workdir.resolve().is_relative_to(root):
        raise OrderFailure(f"the order's dir {manifest.dir!r} leaves the source tree")
    return workdir


def _place_inputs(payload: WorkerPayload, manifest: Manifest, workdir: Path, tmp: Path, log: OrderLog) -> None:
    """Copy in only the declared path of each producer's artifacts, so an order sees exactly what
    it asked for and a missing input fails now rather than halfway through an apply."""
    offered = {(i.from_order, relative_path(i.path, "input path")) for i in payload.inputs}
    for wanted in manifest.inputs:
        if (wanted.from_order, relative_path(wanted.path, "input path")) not in offered:
            raise OrderFailure(f"no download was provided for input {wanted.path!r} of order {wanted.from_order!r}")
    for index, item in enumerate(payload.inputs):
        rel = relative_path(item.path, "input path")
        archive = tmp / f"input-{index}.tar.gz"
        try:
            http_get(item.url, archive)
        except TransferError as exc:
            raise OrderFailure(f"could not download the artifacts of order {item.from_order!r}: {exc}") from None
        try:
            if not extract_under(archive, rel, workdir, what=f"the artifacts of order {item.from_order!r}"):
                raise OrderFailure(f"input {rel!r} is not among the artifacts of order {item.from_order!r}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise OrderFailure(
                f"the artifacts of order {item.from_order!r} are not a readable gzip tar: {exc}"
            ) from None
        finally:
            archive.unlink(missing_ok=True)
        log.note(f"placed input {rel} from order {item.from_order}")


def _command_env(manifest: Manifest, secrets: Mapping[str, str], tmp: Path) -> dict[str, str]:
    """A fresh environment, never a copy of ours: the worker's own AWS credentials (and the
    payload with its URLs, on CodeBuild) must not be visible to user commands."""
    home, scratch = tmp / "home", tmp / "tmp"
    home.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": str(home), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}
    env.update(manifest.env)
    env.update(
        {
            "IAC_CI_RUN_ID": manifest.run_id,
            "IAC_CI_ORDER": manifest.order,
            "IAC_CI_TRACE_ID": manifest.trace_id,
            "IAC_CI_FLOW_ID": manifest.flow_id,
        }
    )
    env.update(manifest.context_env)
    if manifest.changed_paths is not None:
        listing = tmp / "changed-paths.txt"  # outside the work tree: nothing of it reaches artifacts
        listing.write_text("".join(f"{p}\n" for p in manifest.changed_paths), encoding="utf-8")
        env["IAC_CI_CHANGED_FILES"] = str(listing)
    if manifest.state_bucket:
        env["IAC_CI_STATE_BUCKET"] = manifest.state_bucket
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = manifest.region
    env.update(secrets)
    if manifest.embedded_endpoint and manifest.has_role:
        env["AWS_ENDPOINT_URL"] = manifest.embedded_endpoint
    return env


def payload_urls(payload: WorkerPayload) -> list[str]:
    """Every capability in the payload: each one is masked wherever the worker writes text."""
    urls = [payload.bundle_url, payload.log_url, payload.result_url, *(i.url for i in payload.inputs)]
    if payload.artifacts_url:
        urls.append(payload.artifacts_url)
    urls += [u for u in (payload.secrets_url, payload.mask_url, payload.live_log_url) if u]
    return urls


def validation_summary(exc: ValidationError) -> str:
    """Field names and messages only: pydantic's default text repeats the input values."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())
