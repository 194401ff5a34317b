"""Reading a job file the way the CLI submits it: YAML or JSON, local paths made absolute."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import yaml

from lambda_runtime.job import yaml_text


class JobFileError(ValueError):
    pass


def load_job_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml_text.load(text)
    except yaml.YAMLError as exc:
        raise JobFileError(f"{path} is not valid YAML: {yaml_text.describe(exc)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise JobFileError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(doc, dict):
        raise JobFileError(f"{path}: a job must be a mapping with 'name' and 'orders'")
    return doc


def repo_config_job(doc: dict[str, Any], path: Path, job: str | None) -> dict[str, Any]:
    """A job of an ``.iac-ci.yml`` (its ``jobs:``, or its one job) as a job file: its orders run on
    the folder the file is in, as a push would run them on the repository. ``job`` names one of
    several; every problem of the file is an error, as the engine would refuse the file."""
    from lambda_runtime.github import repo_config

    config, problems = repo_config.parse_loaded(doc)
    jobs, more = repo_config.jobs_of(config, path.resolve().parent.name)
    problems += more
    if problems:
        raise JobFileError(f"{path}: " + "; ".join(str(p) for p in problems[:20]))
    if job is None and len(jobs) > 1:
        raise JobFileError(f"{path} has {len(jobs)} jobs ({', '.join(j.name for j in jobs)}): choose one with --job")
    chosen = next((j for j in jobs if job is None or j.name == job), None)
    if chosen is None:
        raise JobFileError(f"{path} has no job '{job}' (jobs: {', '.join(j.name for j in jobs)})")
    return {"source": {"path": "."}, **chosen.config, "name": chosen.name}


def is_repo_config(doc: dict[str, Any], path: Path) -> bool:
    return "jobs" in doc or "on" in doc or path.name in (".iac-ci.yml", ".iac-ci.yaml")


def prepare(doc: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Default the username and resolve ``{path: ...}`` sources against the job file's folder."""
    out = dict(doc)
    if "username" not in out:
        try:
            out["username"] = getpass.getuser()
        except (KeyError, OSError):
            out["username"] = "local"

    def resolve(src: Any) -> Any:
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            return {**src, "path": str((base_dir / src["path"]).resolve())}
        return src

    if "source" in out:
        out["source"] = resolve(out["source"])
    if isinstance(out.get("orders"), list):
        out["orders"] = [
            {**o, "source": resolve(o["source"])} if isinstance(o, dict) and "source" in o else o for o in out["orders"]
        ]
    return out
