"""The worker images a deployment allows (``IacCiPipeline(images=...)``): the one schema the
construct writes, the runtime validates orders against, and CodeBuild dispatch reads.

An order names an image (``image: terraform``) or gives an image URI that some entry allows;
the deployment owner, never the job author, decides which images exist and which of them may
run privileged (docker builds). The default image (the engine's own) needs no entry.
"""
from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

IMAGE_NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TAG_RE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{1,64})?"  # a Docker tag (and digest)
# an ECR image: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@sha256:...]
ECR_URI_RE = r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+([:@][A-Za-z0-9._:-]+)?$"
PUBLIC_URI_RE = r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+([:@][A-Za-z0-9._:-]+)?$"


class WorkerImage(BaseModel):
    """One allowed image. ``uri`` may end in ``*`` to allow every tag of a repository
    (``123456789012.dkr.ecr.eu-west-1.amazonaws.com/tools:*``); an order then gives the full URI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(min_length=1, max_length=1024)
    # whether orders on it may set ``privileged: true`` (CodeBuild's privileged mode, which a docker
    # build needs; the image starts its own docker daemon, CodeBuild does not for a custom image)
    privileged: bool = False
    # whether the image has Python 3 and the iac-ci runtime (the worker runs inside it); an order
    # on an image without is refused: every order's result is reported by the worker
    python: bool = True

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if "*" in v and not v.endswith(":*") or v.count("*") > 1:
            raise ValueError(f"'{v[:200]}': a wildcard is only a whole tag (repository:*)")
        plain = v.removesuffix("*").rstrip(":")
        if not (re.match(ECR_URI_RE, plain) or re.match(PUBLIC_URI_RE, plain)):
            raise ValueError(f"'{v[:200]}' is not an image URI (registry/repository[:tag])")
        return v

    @property
    def is_ecr(self) -> bool:
        return ".dkr.ecr." in self.uri

    def allows(self, uri: str) -> bool:
        """The exact URI, or for ``repo:*`` any tag of that repository (a tag, nothing else)."""
        if not self.uri.endswith("*"):
            return uri == self.uri
        prefix = self.uri[:-1]
        return uri.startswith(prefix) and re.fullmatch(TAG_RE, uri[len(prefix):]) is not None


class ImageAllowList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, WorkerImage] = Field(default_factory=dict)

    @field_validator("images")
    @classmethod
    def _names(cls, v: dict[str, WorkerImage]) -> dict[str, WorkerImage]:
        bad = [n for n in v if not re.match(IMAGE_NAME_RE, n)]
        if bad:
            raise ValueError(f"image names must match {IMAGE_NAME_RE}: {', '.join(bad[:5])}")
        return v

    def resolve(self, ref: str) -> tuple[str, WorkerImage] | None:
        """(the URI to run, its entry) for an order's ``image:``: an entry's name (whose URI must
        be exact), or a URI an entry allows; None: not allowed."""
        entry = self.images.get(ref)
        if entry is not None:
            return (entry.uri, entry) if not entry.uri.endswith("*") else None
        for candidate in self.images.values():
            if candidate.allows(ref):
                return ref, candidate
        return None

    def to_json(self) -> str:
        return json.dumps({n: i.model_dump() for n, i in sorted(self.images.items())}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ImageAllowList:
        return cls(images=json.loads(text)) if text else cls()
