"""The worker images a deployment allows (``images``): what the CodeBuild role may pull.

An allowed ECR image is pulled by CodeBuild with the project's service role (the project's pull
credentials are ``SERVICE_ROLE``), so the role needs the pull actions on that image's repository;
the repository is read from the URI, which is why an ECR URI the construct cannot parse into
account, region and repository is refused at synth rather than left to fail a build. A wildcard
is only ever a whole tag (``repo:*``, ``WorkerImage`` refuses any other), so every tag of an
allowed repository is that one repository's ARN, never a wildcard one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from pydantic import ValidationError

from lambda_runtime.schema.images import ImageAllowList, WorkerImage

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest], the wildcard already removed
ECR_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<china>\.cn)?"
                     r"/(?P<repository>[a-z0-9._/-]+)([:@][A-Za-z0-9._:-]*)?$")


@dataclass(frozen=True)
class EcrRepository:
    account: str
    region: str
    name: str
    china: bool

    def arn(self, stack: Stack) -> str:
        return stack.format_arn(partition="aws-cn" if self.china else None, service="ecr", region=self.region,
                                account=self.account, resource="repository", resource_name=self.name,
                                arn_format=ArnFormat.SLASH_RESOURCE_NAME)


def ecr_repository(image: WorkerImage) -> EcrRepository:
    """The repository of an ECR image; ValueError saying why the URI is not one."""
    match = ECR_URI.match(image.uri.removesuffix("*"))
    if match is None:
        raise ValueError("an ECR image URI must be <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag]")
    return EcrRepository(account=match["account"], region=match["region"], name=match["repository"],
                         china=match["china"] is not None)


def allow_list(images: Mapping[str, WorkerImage] | None) -> ImageAllowList:
    return ImageAllowList(images=dict(images or {}))


def image_problems(images: Mapping[str, WorkerImage] | None) -> list[str]:
    """Every problem of the ``images`` property, each naming its image."""
    if images is None:
        return []
    if not isinstance(images, Mapping):
        return ["images must be a mapping of image name to WorkerImage"]
    out = [f"images: '{name}' must be a WorkerImage, got {type(image).__name__}"
           for name, image in images.items() if not isinstance(image, WorkerImage)]
    if out:
        return out
    try:
        allow_list(images)
    except ValidationError as exc:
        out += [f"images: {error['msg']}" for error in exc.errors()]
    for name, image in images.items():
        if image.is_ecr:
            try:
                ecr_repository(image)
            except ValueError as exc:
                out.append(f"images: '{name}' ({image.uri}): {exc}")
    return out


def repository_arns(stack: Stack, images: Mapping[str, WorkerImage] | None) -> list[str]:
    """The ECR repositories of the allowed images, each once (tags of one repository share it)."""
    repositories = {ecr_repository(i) for i in (images or {}).values() if i.is_ecr}
    return [r.arn(stack) for r in sorted(repositories, key=lambda r: (r.account, r.region, r.name))]
