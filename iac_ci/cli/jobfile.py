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
