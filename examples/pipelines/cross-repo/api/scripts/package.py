"""Zip each handler (src/<name>/handler.py) into dist/<name>.zip and write dist/manifest.json:
the commit, each zip's sha256, and the handlers this push changed, read from the file
$IAC_CI_CHANGED_FILES names (every handler when there is none, as in a local run). The infra
repository's deploy job updates the functions the manifest names (its `handler` parameter)."""
import hashlib
import json
import os
import zipfile
from pathlib import Path

src, dist = Path("src"), Path("dist")
dist.mkdir(exist_ok=True)
handlers = sorted(p.name for p in src.iterdir() if (p / "handler.py").is_file())
listed = os.environ.get("IAC_CI_CHANGED_FILES")
if listed:
    paths = Path(listed).read_text().splitlines()
    changed = [h for h in handlers if any(p.startswith(f"src/{h}/") for p in paths)]
else:
    changed = handlers
digests = {}
for name in handlers:
    target = dist / f"{name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted((src / name).glob("*.py")):
            z.write(path, path.name)
    digests[name] = hashlib.sha256(target.read_bytes()).hexdigest()
manifest = {"commit": os.environ.get("IAC_CI_HEAD_SHA", "local"), "handlers": digests, "changed": changed}
(dist / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(json.dumps(manifest))
