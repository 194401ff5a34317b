"""A stand-in for terraform, so that this example runs where terraform is not installed.

    python3 fake_terraform.py plan --stage dev [--zip dist/lambda.zip] [--out tfplan] [--detailed-exitcode]
    python3 fake_terraform.py apply tfplan

``plan`` compares the stage's variables (``envs/<stage>.tfvars``, what terraform would converge to)
with ``live/<stage>.json`` (standing in for what is deployed) and, given ``--zip``, the package
to deploy. It prints the changes and writes them to ``--out``. With ``--detailed-exitcode`` it exits
2 when something differs, as ``terraform plan -detailed-exitcode`` does. ``apply`` prints the saved
plan and what it changed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def tfvars(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, val = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            out[key.strip()] = val.strip().strip('"')
    return out


def plan(args: argparse.Namespace) -> int:
    want = tfvars(Path("envs") / f"{args.stage}.tfvars")
    have = json.loads((Path("live") / f"{args.stage}.json").read_text())
    changes = [f"~ {k}: {have.get(k)} -> {v}" for k, v in sorted(want.items()) if have.get(k) != v]
    if args.zip:
        digest = hashlib.sha256(Path(args.zip).read_bytes()).hexdigest()
        changes.append(f"~ source_code_hash: sha256 {digest}")
    print(f"aws_lambda_function.orders ({want.get('function_name')}):")
    for change in changes or ["No changes. Your infrastructure matches the configuration."]:
        print(f"  {change}")
    print(f"Plan: {len(changes)} to change.")
    if args.out:
        Path(args.out).write_text(json.dumps({"stage": args.stage, "changes": changes}))
    return 2 if args.detailed_exitcode and changes else 0


def apply(args: argparse.Namespace) -> int:
    saved = json.loads(Path(args.planfile).read_text())
    for change in saved["changes"]:
        print(f"  {change}")
    print(f"Apply complete ({saved['stage']}): {len(saved['changes'])} changed.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="fake_terraform.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--stage", required=True)
    p.add_argument("--zip")
    p.add_argument("--out")
    p.add_argument("--detailed-exitcode", action="store_true")
    a = sub.add_parser("apply")
    a.add_argument("planfile")
    args = parser.parse_args()
    return plan(args) if args.command == "plan" else apply(args)


if __name__ == "__main__":
    sys.exit(main())
