"""``iac-ci init``: the HCL scanner (``scaffold.hcl``), telling roots from modules
(``scaffold.terraform``), the file it writes (``scaffold.render``) and the command (``cli.init``),
run for real on copies of ``tests/fixtures/terraform-monorepo``; and the README's section on it,
whose commands run here and whose excerpt is what ``init`` writes."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from support.github_flow import commit_files, new_repo
from support.paths import FIXTURES, REPO_ROOT

from iac_ci.cli.main import main
from iac_ci.scaffold import hcl, render, terraform
from lambda_runtime.github import repo_config, repo_config_schema, selection
from lambda_runtime.job import yaml_text
from lambda_runtime.job.validate import ValidationPolicy, parse_job

MONOREPO = FIXTURES / "terraform-monorepo"
ROOTS = ["envs/dev", "envs/prod", "stacks/dns"]
SHARED = ["modules/legacy-tags/**", "modules/network/**"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BACKEND = 'terraform {\n  backend "s3" {}\n}\n'
ROOT_LIKE = 'provider "aws" {}\n' + BACKEND


def copy_of_monorepo(tmp_path: Path) -> Path:
    target = tmp_path / "infra"
    shutil.copytree(MONOREPO, target)
    return target


def iac_ci(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def files_under(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def committed(top: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    """A real git repository at ``top`` with ``files`` (path -> text) and symbolic ``links``
    (path -> target), all committed (the links in a second commit: ``new_repo`` makes the folder)."""
    new_repo(top, files)
    if links:
        for path, target in links.items():
            (top / path).parent.mkdir(parents=True, exist_ok=True)
            (top / path).symlink_to(target)
        commit_files(top, {}, "links")
    return top


def module_call(name: str, source: str) -> str:
    return f'module "{name}" {{\n  source = "{source}"\n}}\n'


def init_config(top: Path) -> str:
    """``iac-ci init`` run for real on ``top``: the .iac-ci.yml it wrote."""
    result = CliRunner().invoke(main, ["init", str(top)])
    assert result.exit_code == 0, result.output
    return (top / ".iac-ci.yml").read_text(encoding="utf-8")


def planned(config_text: str, *changed: str) -> list[str]:
    """The plan orders a pull request changing ``changed`` runs (the engine's own selection)."""
    return selection.select(job_of(config_text), command="plan", event="synchronize", changed=list(changed)).names


def job_of(config_text: str) -> Any:
    config, problems = repo_config.parse(config_text)
    jobs, more = repo_config.jobs_of(config, "acme/infra")
    assert problems + more == []
    (job,) = jobs
    return parse_job({**job.config, "name": job.name}, ValidationPolicy(check_rules=False))


# ---- the scanner -------------------------------------------------------------------------------
def test_module_calls_providers_and_the_backend_are_read() -> None:
    facts = hcl.scan('''
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
  backend "s3" {
    bucket = "state"
    region = "eu-west-1"
  }
}
provider "aws" { region = "eu-west-1" }
module "net" { source = "./modules/net" }
module "dns" {
  source  = "terraform-aws-modules/route53/aws"
  version = "~> 3.0"
}
''')
    assert [(m.name, m.source) for m in facts.modules] == [("net", "./modules/net"),
                                                          ("dns", "terraform-aws-modules/route53/aws")]
    assert facts.providers == ("aws",)
    assert facts.backend == hcl.Backend("s3", frozenset({"bucket", "region"}))
    assert facts.problems == ()


@pytest.mark.parametrize("text", [
    '# module "a" { source = "./fake" }\n',
    '// module "a" { source = "./fake" }\n',
    '/* module "a" {\n  source = "./fake"\n} */\n',
    'locals {\n  doc = <<-EOT\n    module "a" {\n      source = "./fake"\n    }\n  EOT\n}\n',
    'locals {\n  text = "module \\"a\\" { source = \\"./fake\\" }"\n}\n',
    'resource "x" "y" {\n  dynamic "m" {\n    content {\n      source = "./fake"\n    }\n  }\n}\n',
    'locals {\n  modules = { a = { source = "./fake" } }\n}\n',
], ids=["hash comment", "slash comment", "block comment", "heredoc", "string", "nested block", "object"])
def test_what_only_looks_like_a_module_call_is_none(text: str) -> None:
    facts = hcl.scan(text + 'module "real" {\n  source = "./real"\n}\n')
    assert [(m.name, m.source) for m in facts.modules] == [("real", "./real")]
    assert facts.problems == ()


def test_braces_and_quotes_inside_strings_and_templates_do_not_end_blocks() -> None:
    facts = hcl.scan('''
resource "aws_iam_policy" "p" {
  name   = "a } b { c"
  policy = jsonencode({ Statement = [{ Action = "s3:*", Resource = "${var.arn}/*" }] })
  tags   = { Name = "${format("%s-}", var.name)}" }
}
module "after" {
  source = "../after"
}
''')
    assert [(m.name, m.source) for m in facts.modules] == [("after", "../after")]


def test_an_interpolated_source_names_no_folder_and_an_escaped_one_does() -> None:
    facts = hcl.scan('module "a" {\n  source = "${path.module}/x"\n}\nmodule "b" {\n  source = "./$${b}"\n}\n')
    assert [(m.name, m.source) for m in facts.modules] == [("a", None), ("b", "./${b}")]


def test_a_cloud_block_is_a_backend() -> None:
    facts = hcl.scan('terraform {\n  cloud {\n    organization = "acme"\n    workspaces { name = "prod" }\n  }\n}\n')
    assert facts.backend == hcl.Backend("cloud", frozenset({"organization"}))


def test_the_json_syntax_says_the_same() -> None:
    facts = hcl.scan_json(json.dumps({
        "module": {"net": {"source": "./net"}, "dyn": [{"source": "${path.module}/x"}]},
        "provider": [{"aws": {"region": "eu-west-1"}}],
        "terraform": [{"backend": {"s3": {"key": "k"}}}],
    }))
    assert [(m.name, m.source) for m in facts.modules] == [("net", "./net"), ("dyn", None)]
    assert facts.providers == ("aws",) and facts.backend == hcl.Backend("s3", frozenset({"key"}))
    assert hcl.scan_json("{not json").problems and hcl.scan_json("[]").problems


@pytest.mark.parametrize("text", ['module "a" {\n  source = "./a\n', "/* open", "x = <<EOT\nnever closed\n", "}}\n",
                                  'module "a" {'])
def test_broken_files_are_problems_not_errors(text: str) -> None:
    assert hcl.scan(text).problems


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('module"{}[]()=#/*<<-EOT\n $%\\source./ab')), max_size=200))
def test_the_scanner_never_raises(text: str) -> None:
    hcl.scan(text)


# ---- roots and modules -------------------------------------------------------------------------
def test_the_monorepo_has_three_roots_and_a_shared_module() -> None:
    found = terraform.discover(MONOREPO)
    assert [r.path for r in found.roots] == ROOTS
    paths = {r.path: r.paths for r in found.roots}
    assert paths == {"envs/dev": ("envs/dev/**", *SHARED), "envs/prod": ("envs/prod/**", *SHARED),
                     "stacks/dns": ("stacks/dns/**",)}
    modules = {m.path: m for m in found.modules}
    assert set(modules) == {"modules/network", "modules/network/subnets", "modules/legacy-tags",
                            "envs/prod/modules/alarms"}
    assert modules["modules/network"].roots == ("envs/dev", "envs/prod")
    assert modules["modules/network/subnets"].used_by == ("modules/network",)  # the nested module
    assert modules["modules/legacy-tags"].configures == ("provider aws",)  # a module all the same
    assert found.skipped == (terraform.Skipped("modules/network/tests", "test folder"),)
    assert found.unused == () and found.notes == ()


def test_working_folders_hidden_folders_and_test_fixtures_are_not_searched(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    root_like = 'provider "aws" {}\nterraform {\n  backend "s3" {}\n}\n'
    write(top / "envs/dev/.terraform/modules/network/main.tf", root_like)
    write(top / ".github/scratch/main.tf", root_like)
    write(top / "node_modules/pkg/main.tf", root_like)
    write(top / "test/fixtures/basic/main.tf", root_like)
    write(top / "test/basic_test.go", "package test\n")  # Terratest's: what makes test/ a test folder
    found = terraform.discover(top)
    assert [r.path for r in found.roots] == ROOTS
    assert {s.path for s in found.skipped} == {".github", "test", "modules/network/tests"}


def test_a_module_in_a_skipped_folder_is_still_read_when_a_root_uses_it(tmp_path: Path) -> None:
    write(tmp_path / "app/main.tf", 'provider "aws" {}\nmodule "x" {\n  source = "../tests/helpers"\n}\n')
    write(tmp_path / "tests/helpers/main.tf", 'module "y" {\n  source = "../../lib"\n}\n')
    write(tmp_path / "lib/main.tf", 'variable "a" {}\n')
    write(tmp_path / "tests/helpers_test.go", "package test\n")  # tests/ is a test folder
    found = terraform.discover(tmp_path)
    assert [(r.path, r.paths) for r in found.roots] == [("app", ("app/**", "lib/**", "tests/helpers/**"))]
    assert found.skipped == (terraform.Skipped("tests", "test folder"),)


def test_nothing_under_a_test_folder_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File names tell a test folder (and its own files, whether it has a backend block): the
    Terraform files under it are never parsed, however many or broken they are."""
    unread = 'module "never-parsed" {\n  source = "./nowhere"\n'  # unclosed, and leading nowhere
    write(tmp_path / "main.tf", ROOT_LIKE)
    write(tmp_path / "tests/main.tftest.hcl", 'run "plan" {}\n')
    write(tmp_path / "tests/setup/main.tf", unread)
    write(tmp_path / "test/helper_test.go", "package test\n")
    write(tmp_path / "test/fixtures/basic/main.tf", unread)
    write(tmp_path / "envs/test/main.tf", BACKEND)  # read: its backend block makes it a root, tests or not
    write(tmp_path / "envs/test/main.tftest.hcl", 'run "plan" {}\n')
    parsed: list[str] = []
    scan = terraform.scan

    def recorded(text: str) -> hcl.HclFacts:
        parsed.append(text)
        return scan(text)

    monkeypatch.setattr(terraform, "scan", recorded)
    found = terraform.discover(tmp_path)
    assert [r.path for r in found.roots] == [".", "envs/test"]
    assert found.skipped == (terraform.Skipped("test", "test folder"), terraform.Skipped("tests", "test folder"))
    assert BACKEND in parsed and ROOT_LIKE in parsed
    assert [text for text in parsed if "never-parsed" in text] == []


def test_unused_modules_and_plain_folders(tmp_path: Path) -> None:
    write(tmp_path / "modules/unused/main.tf", 'variable "a" {}\n')
    write(tmp_path / "modules/standalone/main.tf", 'provider "aws" {}\n')  # a provider: a root after all
    write(tmp_path / "scripts/main.tf", 'resource "null_resource" "x" {}\n')
    found = terraform.discover(tmp_path)
    assert found.unused == ("modules/unused",)
    assert [r.path for r in found.roots] == ["modules/standalone", "scripts"]
    assert found.roots[1].why == "no backend or provider block, but no folder uses it as a module"


def test_sources_that_lead_nowhere_are_notes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "main.tf", 'variable "a" {}\n')
    top = tmp_path / "repo"
    write(top / "app/main.tf", 'provider "aws" {}\n'
                              'module "gone" {\n  source = "./gone"\n}\n'
                              'module "out" {\n  source = "../../outside"\n}\n'
                              'module "link" {\n  source = "../linked"\n}\n'
                              'module "dyn" {\n  source = "${path.module}/x"\n}\n')
    (top / "linked").symlink_to(outside, target_is_directory=True)
    found = terraform.discover(top)
    assert [(r.path, r.modules) for r in found.roots] == [("app", ())]
    notes = "\n".join(found.notes)
    for expected in ("./gone does not exist", "../../outside is outside repo", "leads outside repo",
                     "not a plain string"):
        assert expected in notes


def test_modules_that_call_each_other_end(tmp_path: Path) -> None:
    write(tmp_path / "root/main.tf", 'terraform {\n  backend "s3" {}\n}\nmodule "a" {\n  source = "../a"\n}\n')
    write(tmp_path / "a/main.tf", 'module "b" {\n  source = "../b"\n}\n')
    write(tmp_path / "b/main.tf", 'module "a" {\n  source = "../a"\n}\n')
    found = terraform.discover(tmp_path)
    assert [(r.path, r.paths) for r in found.roots] == [("root", ("root/**", "a/**", "b/**"))]


def test_a_folder_named_test_is_a_root_unless_it_holds_tests(tmp_path: Path) -> None:
    write(tmp_path / "envs/test/main.tf", BACKEND + module_call("net", "../../modules/net"))
    write(tmp_path / "envs/test/main.tftest.hcl", 'run "plan" {}\n')  # tested, and a root all the same: a backend
    write(tmp_path / "modules/net/main.tf", 'variable "cidr" {}\n')
    write(tmp_path / "qa/fixtures/main.tf", 'provider "aws" {}\n')  # named like a test folder, holding no tests
    write(tmp_path / "modules/net/tests/setup/main.tf", 'provider "aws" {}\n')  # terraform test's, beside a module
    write(tmp_path / "test/helper/main.tf", ROOT_LIKE)
    write(tmp_path / "test/helper_test.go", "package test\n")  # Terratest's
    found = terraform.discover(tmp_path)
    assert [(r.path, r.paths) for r in found.roots] == [("envs/test", ("envs/test/**", "modules/net/**")),
                                                       ("qa/fixtures", ("qa/fixtures/**",))]
    assert found.skipped == (terraform.Skipped("modules/net/tests", "test folder"),
                             terraform.Skipped("test", "test folder"))
    assert planned(init_config(tmp_path), "modules/net/main.tf") == ["plan-envs-test"]


def test_a_root_holding_other_roots_leaves_their_changes_to_them(tmp_path: Path) -> None:
    write(tmp_path / "infra/main.tf", BACKEND + module_call("m", "./modules/m"))
    write(tmp_path / "infra/modules/m/main.tf", 'variable "a" {}\n')
    write(tmp_path / "infra/files/policy.json", "{}\n")
    write(tmp_path / "infra/sub/main.tf", BACKEND)
    write(tmp_path / "infra/deep/common.tfvars", 'region = "eu-west-1"\n')  # infra's: deep itself is no root
    write(tmp_path / "infra/deep/x/main.tf", BACKEND)
    found = terraform.discover(tmp_path)
    assert {r.path: r.paths for r in found.roots} == {
        "infra": ("infra/*", "infra/deep/*", "infra/files/**", "infra/modules/**"),
        "infra/deep/x": ("infra/deep/x/**",), "infra/sub": ("infra/sub/**",)}
    text = init_config(tmp_path)
    assert planned(text, "infra/sub/main.tf") == ["plan-infra-sub"]  # neither planned nor locked with infra
    assert planned(text, "infra/deep/x/main.tf") == ["plan-infra-deep-x"]
    for change in ("infra/main.tf", "infra/files/policy.json", "infra/modules/m/main.tf", "infra/deep/common.tfvars"):
        assert planned(text, change) == ["plan-infra"], change


def test_only_what_git_lists_is_searched(tmp_path: Path) -> None:
    top = committed(tmp_path / "repo", {".gitignore": "build/\nvendor/\ncdktf.out/\n", "app/main.tf": ROOT_LIKE})
    write(top / "build/main.tf", ROOT_LIKE)
    write(top / "vendor/acme/main.tf", ROOT_LIKE)
    write(top / "cdktf.out/stacks/app/cdk.tf.json", json.dumps({"terraform": {"backend": {"s3": {}}}}))
    write(top / "scratch/main.tf", ROOT_LIKE)
    write(top / ".git/info/exclude", "scratch/\n")  # ignored too, if only here
    write(top / "envs/new/main.tf", ROOT_LIKE)  # untracked, not ignored: a root before its first commit
    write(top / "app/.terraform/modules/m/main.tf", ROOT_LIKE)  # not ignored, and never searched all the same
    committed(top / "other", {"main.tf": ROOT_LIKE})  # a repository of its own inside this one
    found = terraform.discover(top)
    assert [r.path for r in found.roots] == ["app", "envs/new"] and found.git
    assert "other: another git repository inside this one; not searched" in found.notes
    result = CliRunner().invoke(main, ["init", str(top), "--dry-run"])
    assert result.exit_code == 0 and "folders searched, as git lists them" in result.stderr
    shutil.rmtree(top / ".git")  # outside a git work tree: every folder
    assert [r.path for r in terraform.discover(top).roots] == ["app", "build", "cdktf.out/stacks/app", "envs/new",
                                                               "other", "scratch", "vendor/acme"]


def test_a_root_git_ignores_is_none(tmp_path: Path) -> None:
    top = committed(tmp_path / "repo", {".gitignore": "build/\n", "README.md": "# infra\n"})
    write(top / "build/main.tf", ROOT_LIKE)
    result = CliRunner().invoke(main, ["init", str(top)])
    assert result.exit_code == 2 and not (top / ".iac-ci.yml").exists()
    assert "searched 1 folder (of the files git lists: tracked, or untracked and not ignored) for *.tf" \
        in result.stderr


def test_symbolic_links_are_named_as_git_reports_them(tmp_path: Path) -> None:
    """A linked .tf file changes at its target, a linked module folder at its real folder (and
    at the link); a folder holding only link targets is no root."""
    top = committed(tmp_path / "repo", {
        "envs/dev/main.tf": BACKEND + module_call("net", "../../modules/net"),
        "shared/providers.tf": 'provider "aws" {}\n',
        "common/net/main.tf": 'variable "cidr" {}\n',
    }, links={"envs/dev/providers.tf": "../../shared/providers.tf", "modules/net": "../common/net"})
    found = terraform.discover(top)
    (root,) = found.roots
    assert (root.path, root.providers) == ("envs/dev", ("aws",))  # the linked file is read as its own
    assert root.paths == ("envs/dev/**", "common/net/**", "modules/net", "shared/providers.tf")
    assert [(m.path, m.used_by) for m in found.modules] == [("common/net", ("envs/dev",))]
    assert "shared: its Terraform files are the targets of symbolic links in envs/dev; not taken as a root" \
        in found.notes
    text = init_config(top)
    for change in ("shared/providers.tf", "common/net/main.tf", "modules/net"):
        assert planned(text, change) == ["plan-envs-dev"], change


def test_a_linked_file_outside_the_repository_is_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere/providers.tf", 'provider "google" {}\n')
    top = committed(tmp_path / "repo", {"app/main.tf": BACKEND}, links={"app/providers.tf": str(outside)})
    found = terraform.discover(top)
    assert [(r.path, r.paths, r.providers) for r in found.roots] == [("app", ("app/**",), ())]
    assert "app/providers.tf: a symbolic link to outside repo; not read" in found.notes


def test_module_folders_past_what_when_paths_takes_are_named_by_their_parent(tmp_path: Path) -> None:
    calls = [module_call(f"a{i}", f"../modules/a/m{i:02}") for i in range(60)]
    calls += [module_call(f"b{i}", f"../modules/b/m{i:02}") for i in range(60)]
    write(tmp_path / "app/main.tf", BACKEND + "".join(calls))
    for group in "ab":
        for i in range(60):
            write(tmp_path / f"modules/{group}/m{i:02}/main.tf", 'variable "a" {}\n')
    (root,) = terraform.discover(tmp_path).roots
    # the deepest parent first, and only as many as it takes
    assert root.paths == ("app/**", "modules/a/**", *(f"modules/b/m{i:02}/**" for i in range(60)))
    assert terraform.MAX_PATHS == 100  # read from lambda_runtime.job.model.When.paths


@pytest.mark.parametrize(("count", "collapsed"), [(99, False), (120, True)])
def test_a_root_using_many_modules_is_scaffolded(tmp_path: Path, count: int, collapsed: bool) -> None:
    calls = "".join(module_call(f"m{i}", f"../modules/m{i:03}") for i in range(count))
    write(tmp_path / "app/main.tf", BACKEND + calls)
    for i in range(count):
        write(tmp_path / f"modules/m{i:03}/main.tf", 'variable "a" {}\n')
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    paths = yaml_text.load((tmp_path / ".iac-ci.yml").read_text(encoding="utf-8"))["orders"][0]["when"]["paths"]
    said = "app uses 120 module folders: more paths than when.paths takes (100), so it names those under modules " \
           "by modules/**"
    if collapsed:
        assert paths == ["app/**", "modules/**"] and said in result.stderr
    else:
        assert len(paths) == 100 and "more paths than when.paths takes" not in result.stderr
    assert planned((tmp_path / ".iac-ci.yml").read_text(encoding="utf-8"), "modules/m042/main.tf") == ["plan-app"]


# ---- the file ----------------------------------------------------------------------------------
def test_init_on_the_monorepo_writes_three_root_projects(tmp_path: Path) -> None:
    """The issue's "done": three roots and a shared module, three root projects, valid."""
    top = copy_of_monorepo(tmp_path)
    result = iac_ci("init", str(top), "--repo", "acme/infra")
    assert result.exit_code == 0, result.output
    text = (top / ".iac-ci.yml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./.iac-ci.schema.json"
    doc = yaml_text.load(text)
    orders = {o["name"]: o for o in doc["orders"]}
    assert list(orders) == [f"{c}-{r.replace('/', '-')}" for r in ROOTS for c in ("plan", "apply")]
    for root in ROOTS:
        plan, apply = orders[f"plan-{root.replace('/', '-')}"], orders[f"apply-{root.replace('/', '-')}"]
        assert plan["dir"] == apply["dir"] == root and "lock" not in plan  # the default lock of the dir
        assert plan["when"] == apply["when"]  # an apply order is selected by its own paths
        assert plan["artifacts"] == ["tfplan"] and apply["inputs"] == [{"from": plan["name"], "path": "tfplan"}]
        assert apply["command"] == "apply" and apply["depends_on"] == [plan["name"]]
        assert apply["apply_requirements"] == ["approved", "undiverged"]  # as examples/terraform-pr has it
    assert orders["plan-envs-dev"]["when"]["paths"] == ["envs/dev/**", *SHARED]
    # the backend decides what init is told: dev's is partial, prod's complete
    assert '-backend-config="key=envs/dev/terraform.tfstate"' in orders["plan-envs-dev"]["cmds"][0]
    assert orders["plan-envs-prod"]["cmds"][0] == "terraform init -input=false -no-color"
    assert "modules/legacy-tags has provider aws, but modules/network uses it as a module" in text
    assert "# its lock: acme/infra:envs/dev" in text

    validated = iac_ci("validate", "--repo-config", str(top / ".iac-ci.yml"))
    assert validated.exit_code == 0, validated.output
    assert "3 plan and 3 apply orders" in validated.output
    schema = json.loads((top / ".iac-ci.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(doc)


def test_a_change_to_the_shared_module_plans_every_root_that_uses_it(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    assert iac_ci("init", str(top)).exit_code == 0
    job = job_of((top / ".iac-ci.yml").read_text(encoding="utf-8"))

    def planned(*changed: str) -> list[str]:
        return selection.select(job, command="plan", event="synchronize", changed=list(changed)).names

    def applied(*changed: str) -> list[str]:
        return selection.select(job, command="apply", event="comment", changed=list(changed),
                                apply_on="command").names

    assert planned("modules/network/subnets/main.tf") == ["plan-envs-dev", "plan-envs-prod"]
    assert applied("modules/legacy-tags/main.tf") == ["apply-envs-dev", "apply-envs-prod"]
    assert planned("envs/prod/modules/alarms/main.tf") == ["plan-envs-prod"]
    assert planned("stacks/dns/backend.tf.json") == ["plan-stacks-dns"]
    assert planned("README.md") == []


def test_the_top_folder_as_a_root_names_its_lock(tmp_path: Path) -> None:
    write(tmp_path / "main.tf", 'terraform {\n  backend "s3" { key = "app.tfstate" }\n}\n'
                                'module "net" {\n  source = "./modules/net"\n}\n')
    write(tmp_path / "modules/net/main.tf", 'variable "cidr" {}\n')
    assert iac_ci("init", str(tmp_path), "--repo", "Acme/App").exit_code == 0
    text = (tmp_path / ".iac-ci.yml").read_text(encoding="utf-8")
    plan, apply = yaml_text.load(text)["orders"]
    assert (plan["name"], apply["name"]) == ("plan", "apply")
    assert plan["lock"] == apply["lock"] == "acme/app:." and "dir" not in plan
    assert plan["when"]["paths"] == [*terraform.ROOT_FILES, "modules/net/**"]
    assert plan["cmds"][0] == ('terraform init -input=false -no-color -backend-config="bucket=$IAC_CI_STATE_BUCKET" '
                               '-backend-config="region=$AWS_REGION"')  # the key is the block's own
    assert iac_ci("validate", str(tmp_path / ".iac-ci.yml")).exit_code == 0
    job = job_of(text)
    assert selection.select(job, command="plan", event="opened", changed=["modules/net/main.tf"]).names == ["plan"]
    assert selection.select(job, command="plan", event="opened", changed=["docs/index.md"]).names == []


def test_the_top_folder_as_a_root_answers_to_the_top_folders_no_other_root_holds(tmp_path: Path) -> None:
    write(tmp_path / "main.tf", BACKEND + module_call("net", "./modules/net")
          + 'resource "aws_iam_policy" "p" {\n  policy = templatefile("${path.module}/files/policy.json", {})\n}\n')
    write(tmp_path / "files/policy.json", "{}\n")
    write(tmp_path / "templates/user_data.sh.tpl", "#!/bin/sh\n")
    write(tmp_path / "modules/net/main.tf", 'variable "cidr" {}\n')
    write(tmp_path / "stacks/dns/main.tf", BACKEND)
    write(tmp_path / ".github/workflows/ci.yml", "on: push\n")
    # what other roots and modules own, through symbolic links too, is not the top folder's
    write(tmp_path / "main.tf", (tmp_path / "main.tf").read_text() + module_call("again", "./lib/net"))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/net").symlink_to("../modules/net")
    write(tmp_path / "shared/providers.tf", 'provider "aws" {}\n')
    (tmp_path / "stacks/dns/providers.tf").symlink_to("../../shared/providers.tf")
    paths = {r.path: r.paths for r in terraform.discover(tmp_path).roots}
    assert paths == {".": (*terraform.ROOT_FILES, "files/**", "templates/**", "modules/net/**", "lib/net"),
                     "stacks/dns": ("stacks/dns/**", "shared/providers.tf")}
    text = init_config(tmp_path)
    assert planned(text, "files/policy.json") == planned(text, "templates/user_data.sh.tpl") == ["plan"]
    assert planned(text, "stacks/dns/main.tf") == ["plan-stacks-dns"]
    assert planned(text, ".github/workflows/ci.yml") == []


@pytest.mark.parametrize("name", ["my env", "a #b", "true", "-x", "'q'", "[x]", "a: b", "prød", "x$y", "%{z}"])
def test_any_folder_name_is_written_so_it_reads_back(tmp_path: Path, name: str) -> None:
    write(tmp_path / "stacks" / name / "main.tf", 'terraform {\n  backend "s3" {}\n}\n'
                                               'module "m" {\n  source = "../../modules/m"\n}\n')
    write(tmp_path / "modules/m/main.tf", 'variable "a" {}\n')
    assert iac_ci("init", str(tmp_path)).exit_code == 0
    plan = yaml_text.load((tmp_path / ".iac-ci.yml").read_text(encoding="utf-8"))["orders"][0]
    assert plan["dir"] == f"stacks/{name}" and plan["when"]["paths"] == [f"stacks/{name}/**", "modules/m/**"]
    assert iac_ci("validate", str(tmp_path / ".iac-ci.yml")).exit_code == 0


def test_the_file_says_what_a_roots_backend_leaves_to_do(tmp_path: Path) -> None:
    write(tmp_path / "local/main.tf", 'provider "aws" {}\n')
    write(tmp_path / "hcp/main.tf", 'terraform {\n  cloud {\n    organization = "acme"\n  }\n}\n')
    text = render.render(terraform.discover(tmp_path), "acme/infra", schema="./s.json")
    assert "# local has no backend block: its state would stay on the worker and be lost." in text
    assert "# Its state is in HCP Terraform: give the orders its API token" in text
    orders = yaml_text.load(text)["orders"]
    assert {o["cmds"][0] for o in orders} == {render.INIT}  # nothing to hand to a backend of their own
    assert render.problems(text, "acme/infra") == []


def test_the_repository_comes_from_the_git_remote(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    subprocess.run(["git", "-C", str(top), "remote", "add", "origin", "git@github.com:acme/infra.git"], check=True)
    assert iac_ci("init", str(top)).exit_code == 0
    assert "# its lock: acme/infra:stacks/dns" in (top / ".iac-ci.yml").read_text(encoding="utf-8")


def test_without_a_known_repository_the_lock_is_described(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    assert iac_ci("init", str(top)).exit_code == 0
    assert "# its lock: <owner/repo>:stacks/dns" in (top / ".iac-ci.yml").read_text(encoding="utf-8")


def test_dry_run_prints_the_file_and_writes_nothing(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    before = files_under(top)
    result = CliRunner().invoke(main, ["init", str(top), "--dry-run", "--repo", "acme/infra"])
    assert result.exit_code == 0
    assert files_under(top) == before
    assert result.stdout == render.render(terraform.discover(top), "acme/infra", schema="./.iac-ci.schema.json")


def test_a_second_init_overwrites_nothing_without_force(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    assert iac_ci("init", str(top)).exit_code == 0
    write(top / "stacks/mail/main.tf", 'terraform {\n  backend "s3" {}\n}\n')  # a new root since
    (top / ".iac-ci.yml").write_text("# mine\norders: [{name: mine, cmds: [echo]}]\n", encoding="utf-8")
    before = files_under(top)
    again = CliRunner().invoke(main, ["init", str(top)])
    assert again.exit_code == 2
    assert f"{top / '.iac-ci.yml'} exists: not overwritten" in again.stderr and "--force" in again.stderr
    assert files_under(top) == before
    forced = iac_ci("init", str(top), "--force")
    assert forced.exit_code == 0
    assert "plan-stacks-mail" in (top / ".iac-ci.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [".iac-ci.yml", ".iac-ci.schema.json"])
def test_a_directory_in_the_way_is_refused_even_with_force(tmp_path: Path, name: str) -> None:
    """Every target is checked first: the other file is not written either."""
    top = copy_of_monorepo(tmp_path)
    (top / name).mkdir()
    before = files_under(top)
    result = CliRunner().invoke(main, ["init", str(top), "--force"])
    assert result.exit_code == 2, result.output
    assert f"{top / name} exists and is not a file (a directory?)" in result.stderr and "Traceback" not in result.output
    assert files_under(top) == before and (top / name).is_dir()


def test_an_edited_schema_file_is_not_overwritten_and_the_same_one_is_no_conflict(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    write(top / ".iac-ci.schema.json", repo_config_schema.text())
    assert iac_ci("init", str(top)).exit_code == 0  # the same content: nothing in the way
    (top / ".iac-ci.yml").unlink()
    write(top / ".iac-ci.schema.json", "{}")
    result = CliRunner().invoke(main, ["init", str(top)])
    assert result.exit_code == 2 and ".iac-ci.schema.json exists" in result.stderr
    assert not (top / ".iac-ci.yml").exists()


def test_schema_url_points_at_a_hosted_schema_and_writes_no_file(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    url = "https://schemas.example.com/iac-ci/0.1.0/repo-config.json"
    assert iac_ci("init", str(top), "--schema-url", url).exit_code == 0
    assert (top / ".iac-ci.yml").read_text(encoding="utf-8").startswith(f"# yaml-language-server: $schema={url}\n")
    assert not (top / ".iac-ci.schema.json").exists()


def test_no_root_exits_2_says_what_was_searched_and_writes_nothing(tmp_path: Path) -> None:
    write(tmp_path / "modules/unused/main.tf", 'variable "a" {}\n')
    write(tmp_path / "tests/fixture/main.tf", 'provider "aws" {}\n')
    write(tmp_path / "tests/fixture_test.go", "package test\n")
    before = files_under(tmp_path)
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert f"no Terraform root found in {tmp_path}: searched 3 folders for *.tf and *.tf.json files" in result.stderr
    assert "modules no folder uses (not planned): modules/unused" in result.stderr
    assert "not searched: tests (test folder)" in result.stderr
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(("args", "field"), [
    (["--repo", "not a repo"], "--repo"),
    (["--schema-url", "ftp://example.com/s.json"], "--schema-url"),
    (["--schema-url", "https://example.com/s.json\norders: []"], "--schema-url"),
])
def test_bad_options_exit_2_naming_them_and_write_nothing(tmp_path: Path, args: list[str], field: str) -> None:
    top = copy_of_monorepo(tmp_path)
    before = files_under(top)
    result = CliRunner().invoke(main, ["init", str(top), *args])
    assert result.exit_code == 2 and field in result.stderr
    assert files_under(top) == before


def test_a_missing_directory_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


# ---- attacks -----------------------------------------------------------------------------------
def test_a_symbolic_link_in_the_way_is_never_written_through(tmp_path: Path) -> None:
    """A planted ``.iac-ci.yml -> elsewhere`` must not make init create or clobber ``elsewhere``."""
    top = copy_of_monorepo(tmp_path)
    victim = tmp_path / "victim.txt"
    (top / ".iac-ci.yml").symlink_to(victim)  # dangling: it does not exist yet
    result = CliRunner().invoke(main, ["init", str(top)])
    assert result.exit_code == 2 and not victim.exists()
    victim.write_text("precious\n", encoding="utf-8")
    assert iac_ci("init", str(top), "--force").exit_code == 0
    assert victim.read_text(encoding="utf-8") == "precious\n"  # the link was replaced, not its target
    assert not (top / ".iac-ci.yml").is_symlink()
    assert yaml_text.load((top / ".iac-ci.yml").read_text(encoding="utf-8"))["orders"]


def test_folder_names_and_labels_cannot_write_yaml_of_their_own(tmp_path: Path) -> None:
    """A folder named ``x\\norders: []`` (or a provider label with an escaped line break) ends up
    in comments and values; it must stay there."""
    evil = "net\norders: [{name: pwned, cmds: [curl evil]}]\n#\u2028x"
    write(tmp_path / "app/main.tf", 'terraform {\n  backend "s3" {}\n}\n'
                                    f'module "net" {{\n  source = "../modules/{json.dumps(evil)[1:-1]}"\n}}\n')
    write(tmp_path / f"modules/{evil}/main.tf", 'provider "a\\nprovider: evil" {}\n')
    write(tmp_path / f"roots/{evil}/main.tf", 'provider "aws" {}\n')  # a root of that name: refused
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / ".iac-ci.yml").read_text(encoding="utf-8")
    doc = yaml_text.load(text)
    assert [o["name"] for o in doc["orders"]] == ["plan-app", "apply-app"]
    assert doc["orders"][0]["when"]["paths"] == ["app/**", f"modules/{evil}/**"]
    assert not any(line.startswith(("orders: [{name: pwned", "provider: evil")) for line in text.splitlines())
    assert "\u2028" not in text.replace(json.dumps(evil)[1:-1], "") and "\x1b" not in result.stderr
    assert "a control character; not taken as a root" in result.stderr


def test_a_folder_name_cannot_run_commands_through_terraform_init(tmp_path: Path) -> None:
    """The state key holds the root's path; run the init command init wrote through a real shell
    (with a stand-in terraform that prints its arguments): the name is an argument, not code."""
    evil = "envs/$(touch pwned)`touch pwned2`"
    write(tmp_path / "repo" / evil / "main.tf", 'terraform {\n  backend "s3" {}\n}\n')
    assert iac_ci("init", str(tmp_path / "repo")).exit_code == 0
    doc = yaml_text.load((tmp_path / "repo/.iac-ci.yml").read_text(encoding="utf-8"))
    init_cmd = doc["orders"][0]["cmds"][0]
    fake = write(tmp_path / "bin/terraform", '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "IAC_CI_STATE_BUCKET": "state", "AWS_REGION": "eu-west-1"}
    ran = subprocess.run(["sh", "-c", init_cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert f"-backend-config=key={evil}/terraform.tfstate" in ran.stdout.splitlines()
    assert "-backend-config=bucket=state" in ran.stdout.splitlines()
    assert not list(tmp_path.rglob("pwned*"))


def test_init_in_a_subfolder_of_a_repository_says_where_the_file_belongs(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write(tmp_path / "infra/main.tf", 'terraform {\n  backend "s3" {}\n}\n')
    result = CliRunner().invoke(main, ["init", str(tmp_path / "infra")])
    assert result.exit_code == 0
    assert f"{tmp_path / 'infra'} is inside the git repository {tmp_path}" in result.stderr


# ---- the real command --------------------------------------------------------------------------
def test_the_installed_command(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    exe = Path(sys.executable).with_name("iac-ci")
    done = subprocess.run([str(exe), "init"], cwd=top, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "found 3 Terraform roots" in done.stderr
    assert f"wrote {top / '.iac-ci.yml'} (3 roots, 6 orders)" in done.stderr
    assert job_of((top / ".iac-ci.yml").read_text(encoding="utf-8")).orders


# ---- the README --------------------------------------------------------------------------------
def readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Writing your first .iac-ci.yml\n")
    return text[start:text.index("\n### ", start + 1)]


def test_the_readme_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = copy_of_monorepo(tmp_path)
    monkeypatch.chdir(top)
    commands = [line.split("#")[0].strip() for body in (b for lang, b in FENCE.findall(readme_section())
                                                         if lang == "sh") for line in body.splitlines()]
    commands = [c for c in commands if c]
    assert len(commands) >= 4 and all(c.startswith("iac-ci ") for c in commands)
    assert "iac-ci init" in commands and "iac-ci schema --repo-config > .iac-ci.schema.json" in commands
    for command in commands:
        words, _, redirect = command.partition(" > ")
        result = CliRunner().invoke(main, shlex.split(words)[1:])
        assert result.exit_code == 0, f"{command}: {result.output}"
        if redirect:
            Path(redirect).write_text(result.stdout, encoding="utf-8")
    assert Path(".iac-ci.schema.json").read_text(encoding="utf-8") == repo_config_schema.text()


def test_the_readme_excerpt_is_what_init_writes(tmp_path: Path) -> None:
    top = copy_of_monorepo(tmp_path)
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    subprocess.run(["git", "-C", str(top), "remote", "add", "origin", "https://github.com/acme/infra.git"],
                   check=True)
    assert iac_ci("init", str(top)).exit_code == 0
    written = (top / ".iac-ci.yml").read_text(encoding="utf-8")
    (excerpt,) = [b for lang, b in FENCE.findall(readme_section()) if lang == "yaml"]
    assert excerpt in written
    assert "in the shape of" in readme_section() and "tests/fixtures/terraform-monorepo" in readme_section()


def test_the_fixture_is_as_its_readme_says() -> None:
    """Its README's layout block lists every folder of Terraform files (a test folder as one)."""
    listed = re.findall(r"^(\S+)/ ", (MONOREPO / "README.md").read_text(encoding="utf-8"), re.MULTILINE)
    folders = {str(p.parent.relative_to(MONOREPO)) for p in MONOREPO.rglob("*")
               if p.name.endswith((".tf", ".hcl", ".json"))}
    assert sorted(listed) == sorted(folders - {"modules/network/tests/setup"})
