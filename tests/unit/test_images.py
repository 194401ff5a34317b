"""Worker images: the URIs a deployment may allow, how an order's ``image:`` resolves (by name or
URI, ``*`` tags), the allow-list's JSON form, and the order rules validation applies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.schema.images import ImageAllowList, WorkerImage

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
TERRAFORM = "public.ecr.aws/hashicorp/terraform:1.9"

ALLOWED = ImageAllowList(images={
    "terraform": WorkerImage(uri=TERRAFORM),
    "tools": WorkerImage(uri=f"{ECR}/tools:*", privileged=True),
    "docker": WorkerImage(uri=f"{ECR}/docker:24", privileged=True),
    "bare": WorkerImage(uri="ghcr.io/org/bare:1", python=False),
})


@pytest.mark.parametrize(
    "uri",
    [f"{ECR}/tools:1.0", f"{ECR}/tools", f"{ECR}/team/tools:1", f"{ECR}/tools:*", f"{ECR}/tools@sha256:abc123",
     "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/x:1", TERRAFORM, "docker.io/library/ubuntu:22.04",
     "ghcr.io/org/img:latest", "localhost:5000/x:y", "quay.io/org/img"],
)
def test_accepted_uris(uri: str) -> None:
    assert WorkerImage(uri=uri).uri == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("ubuntu", "is not an image URI (registry/repository[:tag])"),
        ("ubuntu:22.04", "is not an image URI"),
        ("Docker.io/x/y", "is not an image URI"),
        ("https://ghcr.io/x", "is not an image URI"),
        ("ghcr.io/x y", "is not an image URI"),
        ("ghcr.io/x;rm -rf /", "is not an image URI"),
        ("*", "a wildcard is only a whole tag"),
        (f"{ECR}/tools:*:*", "a wildcard is only a whole tag"),
        ("", "at least 1 character"),
    ],
)
def test_refused_uris(uri: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerImage(uri=uri)
    assert fragment in str(info.value)


def test_defaults_and_fields() -> None:
    image = WorkerImage(uri=TERRAFORM)
    assert (image.privileged, image.python, image.is_ecr) == (False, True, False)
    assert WorkerImage(uri=f"{ECR}/x").is_ecr
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        WorkerImage(uri=TERRAFORM, root=True)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["Terraform", "-x", "a b", "x" * 65, ""])
def test_image_names(name: str) -> None:
    with pytest.raises(ValidationError, match="image names must match"):
        ImageAllowList(images={name: WorkerImage(uri=TERRAFORM)})


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("terraform", (TERRAFORM, "terraform")),
        (TERRAFORM, (TERRAFORM, "terraform")),
        ("docker", (f"{ECR}/docker:24", "docker")),
        (f"{ECR}/tools:2.1", (f"{ECR}/tools:2.1", "tools")),
        (f"{ECR}/tools:2.1@sha256:abc", (f"{ECR}/tools:2.1@sha256:abc", "tools")),
        ("tools", None),  # a wildcard entry has no one URI: an order gives the full URI
        (f"{ECR}/tools", None),  # no tag
        (f"{ECR}/other:1", None),
        ("public.ecr.aws/hashicorp/terraform:1.10", None),  # exact entries are exact
        ("public.ecr.aws/hashicorp/terraform:*", None),
        ("nope", None),
        ("TERRAFORM", None),
    ],
)
def test_resolve(ref: str, resolved: tuple[str, str] | None) -> None:
    found = ALLOWED.resolve(ref)
    if resolved is None:
        assert found is None
    else:
        assert found == (resolved[0], ALLOWED.images[resolved[1]])


def test_the_wildcard_itself_is_no_uri_to_run() -> None:
    assert ALLOWED.resolve(f"{ECR}/tools:*") is None


@pytest.mark.parametrize("ref", [f"{ECR}/tools:", f"{ECR}/tools:x/../../evil", f"{ECR}/tools:1 --privileged"],
                         ids=["empty tag", "a path", "a space"])
def test_a_tag_wildcard_allows_only_tags(ref: str) -> None:
    assert ALLOWED.resolve(ref) is None


def test_json_round_trip() -> None:
    text = ALLOWED.to_json()
    assert ImageAllowList.from_json(text) == ALLOWED
    assert text.startswith('{"bare":{"privileged":false,"python":false,"uri":"ghcr.io/org/bare:1"},')
    assert " " not in text  # compact, sorted: the same list gives the same text
    assert ImageAllowList.from_json(text).to_json() == text
    assert ImageAllowList.from_json("") == ImageAllowList() and ImageAllowList().to_json() == "{}"


def test_json_from_the_construct_is_validated() -> None:
    with pytest.raises(ValidationError):
        ImageAllowList.from_json('{"x":{"uri":"ubuntu"}}')
    with pytest.raises(ValidationError):
        ImageAllowList.from_json('{"X":{"uri":"ghcr.io/a/b:1"}}')


# ---- orders naming images --------------------------------------------------------------------------

def problems(order: dict[str, Any], policy: ValidationPolicy | None = None) -> list[tuple[str | None, str, str]]:
    raw = {"name": "demo", "orders": [{"name": "build", "cmds": ["make"], **order}]}
    with pytest.raises(JobValidationError) as info:
        parse_job(raw, policy if policy is not None else ValidationPolicy(images=ALLOWED))
    return [(p.order, p.field, p.message) for p in info.value.problems]


@pytest.mark.parametrize(
    "order",
    [{"image": "terraform"}, {"image": TERRAFORM}, {"image": "docker", "privileged": True},
     {"image": f"{ECR}/tools:2", "privileged": True}, {"image": f"{ECR}/tools:2"}, {}],
)
def test_accepted_orders(order: dict[str, Any]) -> None:
    parsed = parse_job({"name": "demo", "orders": [{"name": "build", "cmds": ["make"], **order}]},
                       ValidationPolicy(images=ALLOWED))
    assert (parsed.orders[0].image, parsed.orders[0].privileged) == (order.get("image"),
                                                                      order.get("privileged", False))


NAMES = "bare, docker, terraform, tools"


@pytest.mark.parametrize(
    ("order", "policy", "expected"),
    [
        ({"image": "nope"}, None, [("build", "image", f"'nope' is not an image this deployment allows "
                                                      f"(allowed: {NAMES})")]),
        ({"image": "tools"}, None, [("build", "image", f"'tools' is not an image this deployment allows "
                                                       f"(allowed: {NAMES})")]),
        ({"image": "terraform", "privileged": True}, None,
         [("build", "privileged", "image 'terraform' may not run privileged here")]),
        ({"image": "bare"}, None,
         [("build", "image", "'bare' has no Python 3, which the worker needs inside the image (see 'Worker images' "
                             "in the README)")]),
        ({"privileged": True}, None, [("build", "privileged", "needs an image the deployment allows to run "
                                                              "privileged")]),
        ({"image": "terraform", "target": "lambda"}, None,
         [("build", "image", "images and privileged mode are for target codebuild")]),
        ({"privileged": True, "target": "lambda"}, None,
         [("build", "image", "images and privileged mode are for target codebuild")]),
        ({"image": ""}, None, [("build", "image", "String should have at least 1 character")]),
        ({"privileged": "yes", "image": "docker"}, None, [("build", "privileged", "Input should be a valid boolean")]),
        ({"image": "terraform"}, ValidationPolicy(), [("build", "image", "'terraform' is not an image this "
                                                                         "deployment allows (allowed: none)")]),
        ({"image": "terraform"}, ValidationPolicy(images=ImageAllowList()),
         [("build", "image", "'terraform' is not an image this deployment allows (allowed: none)")]),
    ],
    ids=["unknown", "wildcard by name", "not privileged", "no python", "privileged without image",
         "lambda with image", "lambda privileged", "empty", "privileged not a boolean", "no list", "empty list"],
)
def test_refused_orders(order: dict[str, Any], policy: ValidationPolicy | None,
                        expected: list[tuple[str, str, str]]) -> None:
    assert problems(order, policy) == expected


def test_a_long_image_is_shortened_in_the_problem() -> None:
    ref = "ghcr.io/" + "x" * 500
    ((order, fld, message),) = problems({"image": ref})
    assert (order, fld) == ("build", "image") and message.startswith(f"'{ref[:200]}' is not an image")
