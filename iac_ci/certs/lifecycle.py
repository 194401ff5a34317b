"""``init``, ``issue``, ``rotate-intermediate`` and ``revoke``: the CA's writes, in an order that survives
a crash at any point.

The table is the fact; the truststore, API Gateway's truststore version and the CA keys in SSM
follow from it. Each command makes its one decisive change as a conditional DynamoDB transaction
(the commit point) and then everything that can be redone after it (``pending``, whose steps are
the ``converge:*`` checkpoints):

- before the commit only things nobody trusts yet are written: a new CA key under a new SSM name,
  a client's key and certificate files, a staged intermediate (``next``: trusted, signing nothing);
- after it, the pending steps retire the certificates of retired CAs, publish the truststore the
  table implies, tell API Gateway its version and delete the keys of retired CAs. Each is found by
  comparing what is with what the table implies, so running them again finishes what a crash
  interrupted and repeats nothing.

The commands start by looking at what an earlier one left: ``init`` and
``rotate-intermediate --apply`` finish it first (and stop there), and ``issue`` refuses while a
rotation is half done. The API refuses what the table says at once (``intake.client_certs``), so
the moments between a commit and the truststore catching up never let a retired or revoked
certificate in.

Rotation has two steps, both ``rotate-intermediate --apply`` (a dry run by default):

1. a new intermediate, every active client certificate that has not expired re-issued under it with
   the same public key and expiry, the truststore trusting both; the old intermediate becomes
   ``retiring`` (with its ``retire_after``) and its certificates ``superseded``, accepted until the
   grace period ends (``--grace-days``, 7) and refused by the API from then on, step 2 or not. An
   expired certificate is not re-issued (its expiry would come before its start): it stays with the
   old intermediate and is retired with it;
2. after the grace period, the old intermediate is retired: removed from the truststore, its
   certificates marked retired, its key deleted.

``checkpoint(point)`` is called at each named point (tests crash there).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from iac_ci.certs import authority
from iac_ci.certs.store import CertStore, StoreError
from lambda_runtime.aws.clients import is_conditional_failure
from lambda_runtime.certs.records import (
    STATE_PK,
    CaRecord,
    CaState,
    CaStatus,
    CertRecord,
    CertStatus,
    NameClaim,
    ca_pk,
    cert_pk,
    name_pk,
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
GRACE_DAYS = 7
INTERMEDIATE_WARN_DAYS = 30  # time enough to rotate and hand every client its re-issued certificate
ROOT_WARN_DAYS = 90  # a new root means a new certificate for every client
Checkpoint = Callable[[str], None]


class CertsError(Exception):
    """Refused: bad input, or a state the command cannot act on; nothing was changed (or, for a rotation,
    nothing that the next ``rotate-intermediate --apply`` does not finish)."""


@contextlib.contextmanager
def _certificates(what: str) -> Iterator[None]:
    """``cryptography`` refuses what it cannot make or read (a validity that ends before it starts, a
    stored key or certificate that does not parse) with ValueError: a refusal naming ``what``, not a
    traceback."""
    try:
        yield
    except ValueError as exc:
        raise CertsError(f"{what}: {exc}") from None


def _date(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(serial: str) -> str:
    return serial[:12]


def _expiry(not_after: float, now: float) -> str:
    if not_after <= now:
        return f"expired {_date(not_after)}"
    return f"expires {_date(not_after)} (in {(not_after - now) / 86_400:.0f} days)"


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise CertsError(f"NAME '{name}': 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit (it is the certificate's CN and its file name)")


@dataclass(frozen=True)
class Step:
    """One change ``converge`` would make (``line``) and makes (``run``)."""

    line: str
    run: Callable[[], None]


@dataclass(frozen=True)
class Issued:
    name: str
    serial: str
    not_after: float
    cert_path: Path
    key_path: Path | None


@dataclass
class RotationPlan:
    """What ``rotate-intermediate --apply`` would do, read without changing anything."""

    kind: Literal["rotate", "retire", "resume", "converge"]
    state: CaState
    lines: list[str] = field(default_factory=list)
    reissue: list[CertRecord] = field(default_factory=list)
    blocked: str | None = None  # why --apply would refuse (a grace period not over)
    grace_seconds: float = GRACE_DAYS * 86_400
    intermediate_days: int = authority.INTERMEDIATE_DAYS


class Authority:
    def __init__(self, store: CertStore, *, clock: Callable[[], float] = time.time,
                 checkpoint: Checkpoint | None = None):
        self.store, self.clock = store, clock
        self._checkpoint = checkpoint
        self.warnings: list[str] = []  # API Gateway's truststoreWarnings, as each new version is given to it

    def checkpoint(self, point: str) -> None:
        if self._checkpoint is not None:
            self._checkpoint(point)

    # ---- reads --------------------------------------------------------------------------------
    def require_state(self) -> CaState:
        state = self.store.state()
        if state is None:
            raise CertsError("no certificate authority yet: run `iac-ci certs init` first")
        return state

    def _ca(self, serial: str) -> CaRecord:
        ca = self.store.ca(serial)
        if ca is None:
            raise StoreError(f"the certificates table names CA {serial} but holds no record of it")
        return ca

    def _signer(self, ca: CaRecord) -> tuple[x509.Certificate, authority.PrivateKey]:
        """``ca``'s certificate and its private key (from SSM), ready to sign with."""
        key_pem = self.store.get_key(ca.key_parameter)
        with _certificates(f"CA {_short(ca.serial)} (key {ca.key_parameter}) cannot be used"):
            return authority.load_cert(ca.cert_pem), authority.load_key(key_pem)

    def expected_truststore(self, state: CaState, cas: dict[str, CaRecord] | None = None) -> str:
        """The root and every trusted intermediate, oldest first (so staging a rotation and completing it
        publish the same bundle), as API Gateway reads them."""
        cas = cas if cas is not None else self.store.records()[0]
        missing = [s for s in (state.root, *state.trusted) if s not in cas]
        if missing:
            raise StoreError(f"the certificates table names CA {missing[0]} but holds no record of it")
        intermediates = sorted((cas[s] for s in state.trusted), key=lambda ca: (ca.created_at, ca.serial))
        return authority.bundle([cas[state.root].cert_pem, *(ca.cert_pem for ca in intermediates)])

    def pending(self, state: CaState,
                records: tuple[dict[str, CaRecord], list[CertRecord]] | None = None) -> list[Step]:
        """What the table implies and is not yet so; empty when everything agrees."""
        steps: list[Step] = []
        cas, certs = records if records is not None else self.store.records()
        for cert in certs:
            issuer = cas.get(cert.issuer)
            if cert.status.accepted and (issuer is None or not issuer.status.trusted):
                steps.append(Step(f"certificate '{cert.name}' (serial {_short(cert.serial)}): {cert.status.value} -> "
                                  f"retired (its intermediate {_short(cert.issuer)} is retired)",
                                  lambda c=cert: self._retire_cert(c)))  # type: ignore[misc]
        expected = self.expected_truststore(state, cas)
        current = self.store.truststore()
        if current.text != expected:
            names = " + ".join(_short(s) for s in state.trusted)
            steps.append(Step(f"truststore {self.store.resources.truststore_uri}: publish root {_short(state.root)} + "
                              f"intermediate{'s' if len(state.trusted) > 1 else ''} {names}",
                              lambda: self._publish(expected)))
        elif self.store.resources.domain_name and current.version is not None and \
                self.store.domain_truststore().version != current.version:
            steps.append(self._domain_step(current.version))
        for ca in cas.values():
            if not ca.status.trusted and self.store.key_exists(ca.key_parameter):
                steps.append(Step(f"delete the key of retired CA {_short(ca.serial)} ({ca.key_parameter})",
                                  lambda ca=ca: self._delete_key(ca)))  # type: ignore[misc]
        return steps

    # ---- converge's steps ----------------------------------------------------------------------
    def _retire_cert(self, cert: CertRecord) -> None:
        try:
            self.store.transact([self.store.update(
                cert_pk(cert.serial), {"status": CertStatus.RETIRED.value, "status_changed_at": self.clock()},
                condition="#status = :was", values={":was": cert.status.value})])
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
        if cert.status is CertStatus.ACTIVE:
            self._drop_claim(cert.name, cert.serial)
        self.checkpoint("converge:certificate-retired")

    def _drop_claim(self, name: str, serial: str) -> None:
        try:
            self.store.clients.dynamodb.delete_item(
                TableName=self.store.resources.table, Key={"pk": {"S": name_pk(name)}},
                ConditionExpression="serial = :s", ExpressionAttributeValues={":s": {"S": serial}})
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise

    def _publish(self, text: str) -> None:
        version = self.store.put_truststore(text)
        self.checkpoint("converge:truststore-published")
        if self.store.resources.domain_name:
            self._domain_step(version).run()

    def _domain_step(self, version: str | None) -> Step:
        """API Gateway keeps the truststore it read until told: the new version of a versioned bucket,
        or (unversioned) the same URI again, which makes it read the object anew."""
        domain = self.store.resources.domain_name

        def run() -> None:
            warnings = self.store.set_domain_truststore_version(version)
            self.warnings.extend(f"API Gateway domain {domain}: {warning}" for warning in warnings)
            self.checkpoint("converge:domain-updated")

        told = f"truststoreVersion {version}" if version else f"truststoreUri {self.store.resources.truststore_uri}"
        return Step(f"API Gateway domain {domain}: {told}", run)

    def _delete_key(self, ca: CaRecord) -> None:
        self.store.delete_key(ca.key_parameter)
        self.checkpoint("converge:key-deleted")

    def _commit(self, items: list[dict[str, Any]], applied: Callable[[], bool],
                refused: Callable[[], str] | None = None) -> None:
        """The transaction, or (refused) whether our own earlier attempt already applied it: an SDK
        retry of a write whose answer was lost is refused by its own condition. ``refused`` says why
        a refusal that is not ours happened."""
        try:
            self.store.transact(items)
        except Exception as exc:
            if is_conditional_failure(exc) and applied():
                return
            if is_conditional_failure(exc):
                raise CertsError(refused() if refused else "the certificate authority was changed by another "
                                 "command meanwhile; nothing was committed: run this one again") from None
            raise

    # ---- init -----------------------------------------------------------------------------------
    def init(self, *, force: bool = False, root_days: int = authority.ROOT_DAYS,
             intermediate_days: int = authority.INTERMEDIATE_DAYS) -> list[str]:
        """A root and an intermediate CA; with ``force``, in place of the existing ones (whose client
        certificates then stop working). Over an existing CA whose publication a crash interrupted,
        finishes it instead."""
        old = self.store.state()
        if old is not None and not force:
            steps = self.pending(old)
            if steps:
                return ["finished an earlier command:", *self._run(steps)]
            root = self._ca(old.root)
            raise CertsError(f"a certificate authority exists (root {_short(old.root)}, created "
                             f"{_date(root.created_at)}): --force replaces it, and every client certificate it "
                             "issued stops working")
        now = self.clock()
        root_key, intermediate_key = authority.new_key(), authority.new_key()
        organization = self.store.resources.organization
        with _certificates("creating the CA"):
            root_cert = authority.root_ca(root_key, organization=organization, now=now, days=root_days)
            inter_cert = authority.intermediate_ca(intermediate_key.public_key(), root=root_cert,
                                                   root_key=root_key, now=now, days=intermediate_days)
        root = self._ca_record(root_cert, "root", CaStatus.CURRENT, now, issuer=None)
        inter = self._ca_record(inter_cert, "intermediate", CaStatus.CURRENT, now, issuer=root.serial)
        with self._staged_keys() as staged:
            for record, key in ((root, root_key), (inter, intermediate_key)):
                self.store.put_key(record.key_parameter, authority.key_pem(key))
                staged.append(record.key_parameter)
            self.checkpoint("init:keys-stored")
            state = CaState(root=root.serial, current=inter.serial, generation=(old.generation + 1) if old else 1,
                            updated_at=now)
            items = [self.store.put(root), self.store.put(inter)]
            if old is None:
                items.append(self.store.put(state, condition="attribute_not_exists(pk)"))
            else:
                items.append(self.store.put(state, condition="generation = :g", values={":g": old.generation}))
                for serial in {old.root, *old.trusted}:
                    items.append(self.store.update(ca_pk(serial), {"status": CaStatus.RETIRED.value},
                                                   condition="attribute_exists(pk)"))
            self._commit(items, applied=lambda: getattr(self.store.state(), "current", None) == inter.serial)
            staged.clear()
        self.checkpoint("init:committed")
        lines = [f"root CA {_short(root.serial)} ({root.subject}), valid until {_date(root.not_after)}",
                 f"intermediate CA {_short(inter.serial)} ({inter.subject}), valid until {_date(inter.not_after)}",
                 f"CA keys: SSM SecureString {root.key_parameter}, {inter.key_parameter} "
                 f"(KMS key {self.store.resources.kms_key})"]
        return lines + self._run(self.pending(state))

    def _run(self, steps: list[Step]) -> list[str]:
        for step in steps:
            step.run()
        return [step.line for step in steps]

    def _ca_record(self, cert: Any, kind: Literal["root", "intermediate"], status: CaStatus, now: float, *,
                   issuer: str | None) -> CaRecord:
        meta = authority.info(cert)
        return CaRecord(serial=meta.serial, kind=kind, subject=meta.subject, cert_pem=meta.pem,
                        fingerprint=meta.fingerprint, not_before=meta.not_before, not_after=meta.not_after,
                        status=status, key_parameter=self.store.resources.key_parameter(kind, meta.serial),
                        created_at=now, issuer=issuer)

    @contextlib.contextmanager
    def _staged_keys(self) -> Iterator[list[str]]:
        """Keys written for a commit that did not happen are deleted on a (handled) failure: a crash
        leaves them, unreferenced by any CA record and so never trusted or used."""
        staged: list[str] = []
        try:
            yield staged
        except Exception:
            for name in staged:
                with contextlib.suppress(Exception):
                    self.store.delete_key(name)
            raise

    # ---- issue ----------------------------------------------------------------------------------
    def issue(self, name: str, *, days: int = authority.CLIENT_DAYS, csr: bytes | None = None,
              out_dir: Path = Path(".")) -> Issued:
        """A client certificate for ``name`` under the current intermediate: with a key generated here
        (``<name>.key``, mode 0600) or for the public key of ``csr``; the certificate and its chain in
        ``<name>.pem``. The files are written before the record, so a crash between them leaves files
        of a certificate the API does not know, and a failed commit removes them."""
        check_name(name)
        if not 1 <= days <= 3650:
            raise CertsError(f"--days must be between 1 and 3650, got {days}")
        public_key, private_key = None, None
        if csr is not None:
            try:
                public_key = authority.public_key_of_csr(csr)
            except authority.CertificateError as exc:
                raise CertsError(f"--csr: {exc}") from None
        state = self.require_state()
        if state.next:
            raise CertsError("an intermediate rotation is half done: finish it with "
                             "`iac-ci certs rotate-intermediate --apply` first")
        claim = self.store.claim(name)
        held = self.store.cert(claim.serial) if claim else None
        if held is not None and held.status is CertStatus.ACTIVE:
            raise CertsError(f"'{name}' has an active certificate (serial {_short(held.serial)}, valid until "
                             f"{_date(held.not_after)}): revoke it first, or pick another name")
        cert_path, key_path = out_dir / f"{name}.pem", (None if csr is not None else out_dir / f"{name}.key")
        for path in (cert_path, key_path):
            if path is not None and path.exists():
                raise CertsError(f"{path} exists: move it away first (a key is never overwritten)")
        issuer = self._ca(state.current)
        now = self.clock()
        if issuer.not_after <= now:
            raise CertsError(f"the intermediate CA {_short(issuer.serial)} expired {_date(issuer.not_after)}: "
                             "`iac-ci certs rotate-intermediate --apply` makes a new one")
        issuer_cert, issuer_key = self._signer(issuer)
        if public_key is None:
            private_key = authority.new_key()
            public_key = private_key.public_key()
        with _certificates(f"issuing '{name}'"):
            cert = authority.client_cert(public_key, name=name, issuer=issuer_cert, issuer_key=issuer_key,
                                         not_before=now - authority.BACKDATE_SECONDS,
                                         not_after=now + days * authority.DAY)
        record = self._cert_record(cert, name, issuer.serial, now, "csr" if csr is not None else "generated")
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            if private_key is not None and key_path is not None:
                _write_new(key_path, authority.key_pem(private_key), 0o600)
                written.append(key_path)
            _write_new(cert_path, authority.bundle([record.cert_pem, issuer.cert_pem]), 0o644)
            written.append(cert_path)
            self.checkpoint("issue:files-written")
            stale = {":stale": claim.serial} if claim else {":stale": "-"}
            self._commit([self.store.put(record, condition="attribute_not_exists(pk)"),
                          self.store.put(NameClaim(name=name, serial=record.serial),
                                         condition="attribute_not_exists(pk) OR serial = :stale", values=stale),
                          self._unchanged(state)],
                         applied=self._written(record), refused=lambda: self._issue_refused(name, state))
        except Exception:
            if self.store.cert(record.serial) is None:  # not committed: the files name nothing
                for path in written:
                    path.unlink(missing_ok=True)
            raise
        self.checkpoint("issue:committed")
        return Issued(name=name, serial=record.serial, not_after=record.not_after, cert_path=cert_path,
                      key_path=key_path)

    def _cert_record(self, cert: Any, name: str, issuer: str, now: float,
                     source: Literal["generated", "csr", "reissued"], replaces: str | None = None) -> CertRecord:
        meta = authority.info(cert)
        return CertRecord(serial=meta.serial, name=name, subject=meta.subject, fingerprint=meta.fingerprint,
                          cert_pem=meta.pem, issuer=issuer, not_before=meta.not_before, not_after=meta.not_after,
                          status=CertStatus.ACTIVE, issued_at=now, key_source=source, replaces=replaces,
                          writer=secrets.token_hex(8))

    def _written(self, record: CertRecord) -> Callable[[], bool]:
        """Whether ``record`` is in the table as this command wrote it (its writer nonce)."""
        return lambda: getattr(self.store.cert(record.serial), "writer", None) == record.writer

    def _unchanged(self, state: CaState) -> dict[str, Any]:
        """A transaction item holding the commit to the CA state it was made from: a certificate signed
        by an intermediate that a rotation started meanwhile would never be re-issued."""
        return self.store.check(STATE_PK, condition="generation = :g AND attribute_not_exists(#next)",
                                values={":g": state.generation})

    def _issue_refused(self, name: str, read: CaState) -> str:
        """Why the commit of ``issue`` was refused: the CA state it read is gone, or the name is taken."""
        current = self.store.state()
        if current is None or current.generation != read.generation:
            return (f"'{name}' was not issued: the certificate authority changed meanwhile (an intermediate "
                    "rotation, or `certs init --force`), and nothing was written; run `iac-ci certs issue` again"
                    + (" after `iac-ci certs rotate-intermediate --apply` finishes the rotation"
                       if current is not None and current.next else ""))
        return f"'{name}' was not issued: another command took the name meanwhile, and nothing was written"

    # ---- rotate-intermediate --------------------------------------------------------------------
    def plan_rotation(self, *, grace_days: float = GRACE_DAYS, force: bool = False,
                      intermediate_days: int = authority.INTERMEDIATE_DAYS) -> RotationPlan:
        """What ``apply_rotation`` would do; reads only."""
        if grace_days < 0:
            raise CertsError(f"--grace-days must be 0 or more, got {grace_days:g}")
        state = self.require_state()
        records = self.store.records()
        cas, certs = records
        res = self.store.resources
        domain = [f"API Gateway domain {res.domain_name}: truststoreVersion set to the new object version"] \
            if res.domain_name else []
        now = self.clock()
        if state.next:  # a rotation a crash interrupted: finish it
            remaining, expired = self._split(state, certs)
            plan = RotationPlan("resume", state, reissue=remaining, grace_seconds=grace_days * 86_400)
            plan.lines = [f"finish the interrupted rotation to intermediate CA {_short(state.next)}:",
                          *self._reissue_lines(remaining, expired),
                          f"  - intermediate {_short(state.next)} becomes the signing one; {_short(state.current)} "
                          f"is trusted until {_date(now + plan.grace_seconds)} (its certificates are refused after "
                          "that), then retired by the next --apply",
                          self._truststore_line(state, [state.current, state.next]),
                          *[f"  - {line}" for line in domain]]
            return plan
        steps = self.pending(state, records)
        if steps:
            return RotationPlan("converge", state, lines=["finish what an earlier command left undone:",
                                                          *[f"  - {s.line}" for s in steps]])
        if state.retiring:
            old = cas[state.retiring]
            gone = [c for c in certs if c.issuer == old.serial and c.status.accepted]
            plan = RotationPlan("retire", state)
            if state.retire_after is not None and now < state.retire_after and not force:
                plan.blocked = (f"the grace period of intermediate {_short(old.serial)} ends "
                                f"{_date(state.retire_after)}: wait, or pass --force to retire it now (clients still "
                                "on its certificates are refused at once)")
            plan.lines = [f"retire intermediate CA {_short(old.serial)} (step 2 of 2 of its rotation; grace period "
                          f"{'ended' if state.retire_after is None or now >= state.retire_after else 'ends'} "
                          f"{_date(state.retire_after or now)}):",
                          *[f"  - certificate '{c.name}' (serial {_short(c.serial)}, {c.status.value}) stops working"
                            for c in gone],
                          self._truststore_line(state, [state.current]),
                          *[f"  - {line}" for line in domain],
                          f"  - delete its key {old.key_parameter} from SSM"]
            return plan
        current = cas[state.current]
        active, expired = self._split(state, certs)
        plan = RotationPlan("rotate", state, reissue=active, grace_seconds=grace_days * 86_400,
                            intermediate_days=intermediate_days)
        root = cas[state.root]
        if root.not_after <= now:
            plan.blocked = (f"root CA {_short(root.serial)} expired {_date(root.not_after)}: no intermediate it "
                            "signs can be valid; `iac-ci certs init --force` makes a new root and intermediate "
                            "(every certificate issued so far stops working), then `iac-ci certs issue NAME` "
                            "again for each client")
        until = min(now + intermediate_days * authority.DAY, root.not_after)
        plan.lines = ["rotate the intermediate CA (step 1 of 2; nothing stops working yet):",
                      f"  - create a new intermediate CA signed by root {_short(root.serial)}, valid until "
                      f"{_date(until)}; its key in SSM under {res.parameter_prefix}",
                      *self._reissue_lines(active, expired),
                      f"  - intermediate {_short(current.serial)} stays trusted, with the certificates it issued, "
                      f"until {_date(now + plan.grace_seconds)} ({grace_days:g} days): the API refuses them after "
                      "that, and the next `rotate-intermediate --apply` retires it",
                      self._truststore_line(state, [state.current, "<new>"]),
                      *[f"  - {line}" for line in domain]]
        return plan

    def _split(self, state: CaState,
               certs: list[CertRecord] | None = None) -> tuple[list[CertRecord], list[CertRecord]]:
        """The active certificates of the signing intermediate, as one clock reading splits them: the
        unexpired ones are re-issued (with their expiry, an expired one would end before it starts), the
        expired ones are left on it and retired with it."""
        now = self.clock()
        certs = certs if certs is not None else self.store.certs()
        reissue: list[CertRecord] = []
        expired: list[CertRecord] = []
        for cert in certs:
            if cert.status is CertStatus.ACTIVE and cert.issuer == state.current:
                (expired if cert.expired(now) else reissue).append(cert)
        return reissue, expired

    def _reissue_lines(self, certs: list[CertRecord], expired: list[CertRecord]) -> list[str]:
        if not certs:
            lines = [f"  - re-issue no client certificate (none is active{' and unexpired' if expired else ''})"]
        else:
            lines = [f"  - re-issue {len(certs)} active client certificate{'s' if len(certs) > 1 else ''} under it, "
                     "same public key and expiry (clients swap the certificate, not the key):",
                     *[f"      {c.name}: serial {_short(c.serial)}, valid until {_date(c.not_after)}" for c in certs]]
        if expired:
            lines += ["  - expired, not re-issued (they stay with the old intermediate and are retired with it; "
                      "`iac-ci certs revoke NAME`, then `iac-ci certs issue NAME`, gives a client a new one):",
                      *[f"      {c.name}: serial {_short(c.serial)}, expired {_date(c.not_after)}" for c in expired]]
        return lines

    def _truststore_line(self, state: CaState, after: list[str]) -> str:
        def names(serials: list[str]) -> str:
            return " + ".join(s if s.startswith("<") else _short(s) for s in serials)

        def bundle(serials: list[str]) -> str:
            return f"root {_short(state.root)} + intermediate{'s' if len(serials) > 1 else ''} {names(serials)}"

        return (f"  - truststore {self.store.resources.truststore_uri}: {bundle(after)} "
                f"(today: {bundle(list(state.trusted))})")

    def apply_rotation(self, plan: RotationPlan, *, force: bool = False, out_dir: Path = Path(".")) -> list[str]:
        """Carry out ``plan`` (made by ``plan_rotation`` from the same state); re-issued certificates are
        written to ``out_dir/<name>.pem``."""
        if plan.blocked and not force:
            raise CertsError(plan.blocked)
        state = self.require_state()
        if state.generation != plan.state.generation:
            raise CertsError("the certificate authority changed since the plan was made: plan again")
        if plan.kind == "converge":
            return self._run(self.pending(state))
        if plan.kind == "retire":
            return self._retire(state)
        if plan.kind == "rotate":
            state = self._stage(state, plan)
        return self._finish_rotation(state, plan, out_dir)

    def _stage(self, state: CaState, plan: RotationPlan) -> CaState:
        """The new intermediate, trusted but not yet signing (``next``): the truststore must hold it
        before any client gets a certificate it signed."""
        now = self.clock()
        root = self._ca(state.root)
        root_cert, root_key = self._signer(root)
        key = authority.new_key()
        with _certificates(f"creating a new intermediate CA under root {_short(root.serial)}"):
            cert = authority.intermediate_ca(key.public_key(), root=root_cert, root_key=root_key, now=now,
                                             days=plan.intermediate_days)
        record = self._ca_record(cert, "intermediate", CaStatus.NEXT, now, issuer=root.serial)
        staged_state = replace(state, next=record.serial, generation=state.generation + 1, updated_at=now)
        with self._staged_keys() as staged:
            self.store.put_key(record.key_parameter, authority.key_pem(key))
            staged.append(record.key_parameter)
            self.checkpoint("rotate:key-stored")
            self._commit([self.store.put(record, condition="attribute_not_exists(pk)"),
                          self.store.put(staged_state, condition="generation = :g", values={":g": state.generation})],
                         applied=lambda: getattr(self.store.state(), "next", None) == record.serial)
            staged.clear()
        self.checkpoint("rotate:staged")
        return staged_state

    def _finish_rotation(self, state: CaState, plan: RotationPlan, out_dir: Path) -> list[str]:
        assert state.next
        done = [f"intermediate CA {_short(state.next)} created (trusted, not yet signing)"]
        truststore = self.expected_truststore(state)
        if self.store.truststore().text != truststore:
            self._publish(truststore)
            done.append(f"truststore {self.store.resources.truststore_uri}: + intermediate {_short(state.next)}")
        self.checkpoint("rotate:truststore-published")
        new = self._ca(state.next)
        new_cert, new_key = self._signer(new)
        reissue, _ = self._split(state)  # the expired ones stay with the old intermediate
        for old in reissue:
            now = self.clock()
            with _certificates(f"re-issuing '{old.name}' (serial {_short(old.serial)}); the rotation is staged "
                               f"(nothing stops working): `iac-ci certs revoke {old.name}`, then "
                               "`rotate-intermediate --apply` finishes it without this certificate"):
                cert = authority.reissue(authority.load_cert(old.cert_pem), name=old.name, issuer=new_cert,
                                         issuer_key=new_key, now=now)
            record = self._cert_record(cert, old.name, new.serial, now, "reissued", replaces=old.serial)
            self._commit([
                self.store.put(record, condition="attribute_not_exists(pk)"),
                self.store.update(cert_pk(old.serial), {"status": CertStatus.SUPERSEDED.value,
                                                        "replaced_by": record.serial, "status_changed_at": now},
                                  condition="#status = :active", values={":active": CertStatus.ACTIVE.value}),
                self.store.update(name_pk(old.name), {"serial": record.serial}, condition="serial = :old",
                                  values={":old": old.serial}),
            ], applied=self._written(record))
            _replace_file(out_dir / f"{old.name}.pem", authority.bundle([record.cert_pem, new.cert_pem]))
            done.append(f"re-issued '{old.name}': serial {_short(old.serial)} -> {_short(record.serial)}, valid until "
                        f"{_date(record.not_after)} ({out_dir / (old.name + '.pem')})")
            self.checkpoint("rotate:reissued")
        for held in self.store.certs():  # again every one, in case a crash came between a commit and its file
            if held.status is CertStatus.ACTIVE and held.issuer == new.serial and held.key_source == "reissued":
                _replace_file(out_dir / f"{held.name}.pem", authority.bundle([held.cert_pem, new.cert_pem]))
        now = self.clock()
        final = replace(state, current=state.next, next=None, retiring=state.current,
                        retire_after=now + plan.grace_seconds, generation=state.generation + 1, updated_at=now)
        self._commit([
            self.store.put(final, condition="generation = :g", values={":g": state.generation}),
            self.store.update(ca_pk(state.next), {"status": CaStatus.CURRENT.value}, condition="attribute_exists(pk)"),
            self.store.update(ca_pk(state.current), {"status": CaStatus.RETIRING.value,
                                                     "retire_after": final.retire_after},
                              condition="attribute_exists(pk)"),
        ], applied=lambda: getattr(self.store.state(), "current", None) == final.current)
        self.checkpoint("rotate:committed")
        done.append(f"intermediate CA {_short(final.current)} signs from now on; {_short(state.current)} is trusted "
                    f"until {_date(final.retire_after or now)} (the API refuses its certificates after that), then "
                    "retired by the next `rotate-intermediate --apply`")
        return done + self._run(self.pending(final))

    def _retire(self, state: CaState) -> list[str]:
        assert state.retiring
        now = self.clock()
        final = replace(state, retiring=None, retire_after=None, generation=state.generation + 1, updated_at=now)
        self._commit([
            self.store.put(final, condition="generation = :g", values={":g": state.generation}),
            self.store.update(ca_pk(state.retiring), {"status": CaStatus.RETIRED.value},
                              condition="attribute_exists(pk)"),
        ], applied=lambda: getattr(self.store.state(), "retiring", "") is None)
        self.checkpoint("retire:committed")
        return [f"intermediate CA {_short(state.retiring)} retired", *self._run(self.pending(final))]

    # ---- what needs attention ---------------------------------------------------------------------
    def checkup(self) -> list[str]:
        """What needs an operator soon, each with the command that fixes it (``certs list`` prints them):
        nothing in the CA acts on a date by itself. Nothing before ``init``."""
        state = self.store.state()
        if state is None:
            return []
        now = self.clock()
        root, current = self._ca(state.root), self._ca(state.current)
        found = []
        if current.not_after <= now + INTERMEDIATE_WARN_DAYS * authority.DAY:
            found.append(f"intermediate CA {_short(current.serial)} {_expiry(current.not_after, now)}: "
                         "`iac-ci certs rotate-intermediate --apply` makes a new one and re-issues the client "
                         "certificates under it")
        if root.not_after <= now + ROOT_WARN_DAYS * authority.DAY:
            found.append(f"root CA {_short(root.serial)} {_expiry(root.not_after, now)}, and no intermediate "
                         "outlives it: `iac-ci certs init --force` makes a new root and intermediate (every "
                         "certificate issued so far stops working), then `iac-ci certs issue NAME` for each client")
        retiring = self._ca(state.retiring) if state.retiring else None
        if retiring is not None and retiring.grace_over(now):  # the API's own rule, so what it says holds
            found.append(f"the grace period of intermediate CA {_short(retiring.serial)} ended "
                         f"{_date(retiring.retire_after or now)}: the API refuses its certificates; `iac-ci certs "
                         "rotate-intermediate --apply` retires it and removes it from the truststore")
        if self.store.resources.domain_name:
            found += [f"API Gateway domain {self.store.resources.domain_name}: {warning}"
                      for warning in self.store.domain_truststore().warnings]
        return found

    # ---- revoke ---------------------------------------------------------------------------------
    def revoke(self, name: str) -> list[str]:
        """Revoke ``name``'s active certificate and the ones it was re-issued from that are still
        accepted (a rotation's grace period): the API refuses them from now on (within its cache
        time). The name is free again afterwards."""
        check_name(name)
        self.require_state()
        claim = self.store.claim(name)
        active = self.store.cert(claim.serial) if claim else None
        if claim is None or active is None or not active.status.accepted:
            raise CertsError(f"NAME '{name}': no active certificate has this name")
        chain, serial = [], active.replaces
        while serial:
            older = self.store.cert(serial)
            if older is None:
                break
            chain.append(older)
            serial = older.replaces
        done = []
        now = self.clock()
        for older in chain:  # first the ones a rotation superseded, so none outlives the claim
            if older.status.accepted:
                try:
                    self.store.transact([self.store.update(
                        cert_pk(older.serial), {"status": CertStatus.REVOKED.value, "status_changed_at": now},
                        condition="#status = :was", values={":was": older.status.value})])
                except Exception as exc:
                    if not is_conditional_failure(exc):
                        raise
                done.append(f"revoked '{name}' serial {_short(older.serial)} ({older.status.value})")
                self.checkpoint("revoke:superseded")
        self._commit([
            self.store.update(cert_pk(active.serial), {"status": CertStatus.REVOKED.value, "status_changed_at": now},
                              condition="#status = :was", values={":was": active.status.value}),
            self.store.delete(name_pk(name), condition="serial = :s", values={":s": active.serial}),
        ], applied=lambda: getattr(self.store.cert(active.serial), "status", None) is CertStatus.REVOKED)
        done.append(f"revoked '{name}' serial {_short(active.serial)}")
        self.checkpoint("revoke:committed")
        return done


def _write_new(path: Path, text: str, mode: int) -> None:
    """``text`` at ``path``, which must not exist, with ``mode`` from the start (a key is never
    readable by others, not even for a moment); a crash leaves no half-written file at ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # fails if ``path`` appeared meanwhile: never overwrites
    finally:
        tmp.unlink(missing_ok=True)


def _replace_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
