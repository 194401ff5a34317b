"""Namespaces that group a construct's children without changing their CloudFormation logical ids.

CDK derives a resource's logical id from its construct path, so moving a resource under a new
``Construct`` changes its id, and CloudFormation then replaces it (a table or a bucket with its
data, a role, a function). ``keep_logical_ids(group)`` makes ``group`` transparent: every
``CfnElement`` below it gets the logical id it would have without ``group`` in its path, and the
security groups CDK names after their owner's path keep their ``GroupDescription`` (a property
CloudFormation cannot change without replacing the group).

The ids are computed with a port of CDK's ``makeUniqueId`` (``core/lib/private/uniqueid.ts``).
The port is checked against CDK itself on every element it touches: an element is only given
its legacy id if the stack, at the element's real path, allocates exactly what the port
computes. Otherwise (a stack that overrides ``allocateLogicalId``, a ``renameLogicalId``, an
algorithm change in CDK) the element keeps the id CDK gives it and the stack gets a warning,
rather than an id guessed wrong. Elements whose id was overridden by someone else are left
alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import jsii
from aws_cdk import Annotations, AspectPriority, Aspects, CfnElement, IAspect, Names, Stack, Token
from aws_cdk import aws_ec2 as ec2
from constructs import Construct, IConstruct

# core/lib/private/uniqueid.ts
HIDDEN_ID = "Default"  # removed from every path (a construct's default child)
HIDDEN_FROM_HUMAN_ID = "Resource"  # kept in the hash, removed from the readable part
PATH_SEP = "/"
HASH_LEN = 8
MAX_HUMAN_LEN = 240
MAX_ID_LEN = 255
_NON_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]")


def make_unique_id(components: Sequence[str]) -> str:
    """CDK's ``makeUniqueId``: the readable path components, then the first 8 hex digits
    (upper-case) of the MD5 of the whole path; a single component is used as it is."""
    components = [c for c in components if c != HIDDEN_ID]
    if not components:
        raise ValueError("Unable to calculate a unique id for an empty set of components")
    unresolved = [c for c in components if Token.is_unresolved(c)]
    if unresolved:
        raise ValueError(f"ID components may not include unresolved tokens: {','.join(unresolved)}")
    if len(components) == 1:
        candidate = _NON_ALPHANUMERIC.sub("", components[0])
        if len(candidate) <= MAX_ID_LEN:
            return candidate
    digest = hashlib.md5(PATH_SEP.join(components).encode("utf-8"), usedforsecurity=False).hexdigest()
    human = "".join(_NON_ALPHANUMERIC.sub("", c) for c in _remove_dupes(components) if c != HIDDEN_FROM_HUMAN_ID)
    return human[:MAX_HUMAN_LEN] + digest[:HASH_LEN].upper()


def _remove_dupes(path: Sequence[str]) -> list[str]:
    """Drop a component the previous kept one ends with (``Bucket/Bucket`` reads ``Bucket``)."""
    out: list[str] = []
    for component in path:
        if not out or not out[-1].endswith(component):
            out.append(component)
    return out


def logical_id_components(element: IConstruct, without: IConstruct | None = None) -> list[str]:
    """The path components ``Stack.allocateLogicalId`` hashes: those below the element's stack,
    less ``without``."""
    scopes = element.node.scopes
    below_stack = scopes[scopes.index(Stack.of(element)) + 1:]
    return [s.node.id for s in below_stack if s is not without]


def unique_id_components(construct: IConstruct, without: IConstruct | None = None) -> list[str]:
    """The path components ``Names.uniqueId`` hashes: every one below the app, less ``without``."""
    return [s.node.id for s in construct.node.scopes[1:] if s is not without]


@jsii.implements(IAspect)
class KeepLogicalIds:
    """Gives every element below ``group`` the logical id it would have without ``group``."""

    def __init__(self, group: Construct) -> None:
        self.group = group
        self._warned = False

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, CfnElement):
            self._keep_logical_id(node)
        if isinstance(node, ec2.CfnSecurityGroup):
            self._keep_group_description(node)

    def _keep_logical_id(self, element: CfnElement) -> None:
        stack = Stack.of(element)
        legacy = make_unique_id(logical_id_components(element, without=self.group))
        current = stack.resolve(element.logical_id)
        if current == legacy:
            return  # already given (an earlier pass), or a path the group does not change
        allocated = stack.get_logical_id(element)
        if current != allocated:
            return  # overridden by someone else: theirs to keep
        if allocated != make_unique_id(logical_id_components(element)):
            self._warn(element)  # the stack allocates ids its own way: its legacy id is unknown here
            return
        element.override_logical_id(legacy)

    def _keep_group_description(self, group: ec2.CfnSecurityGroup) -> None:
        """Lambda and CodeBuild describe the security group they create in a VPC with their own
        ``Names.uniqueId``; a security group L2 without description uses its path."""
        description = group.group_description
        if Token.is_unresolved(description):
            return
        for scope in reversed(group.node.scopes):  # the innermost first: its id and path are the longest
            if scope is self.group:
                break
            legacy = unique_id_components(scope, without=self.group)
            description = description.replace(Names.unique_id(scope), make_unique_id(legacy))
            description = description.replace(scope.node.path, PATH_SEP.join(legacy))
        group.group_description = description

    def _warn(self, element: CfnElement) -> None:
        if not self._warned:
            self._warned = True
            Annotations.of(self.group).add_warning_v2(
                "@iac-ci/constructs:logicalIds",
                f"{Stack.of(element).node.path} does not allocate logical ids as CDK does by default (e.g. "
                f"{element.node.path}): the resources under {self.group.node.path} keep the ids it allocates, "
                "which differ from those of iac-ci versions before this namespace existed",
            )


def keep_logical_ids(group: Construct) -> None:
    """Make ``group`` transparent to logical ids: for the elements below it now (call this once
    the group is built, before anything resolves their ids, e.g. cdk-nag's suppressions), and,
    as an aspect, for those added to it later (a policy created by ``add_to_role_policy``)."""
    aspect = KeepLogicalIds(group)
    for node in group.node.find_all():
        aspect.visit(node)
    Aspects.of(group).add(aspect, priority=AspectPriority.MUTATING)
