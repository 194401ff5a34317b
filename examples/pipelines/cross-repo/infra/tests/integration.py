"""Stand-in for the integration tests (real: pytest tests/integration -q against
https://api.acme.example.com): checks that what deploy-api deployed (deployed.json) is exactly
acme/api's build (dist/manifest.json), and prints the requests the real tests would make."""
import json
import sys
from pathlib import Path

manifest = json.loads(Path("dist/manifest.json").read_text())
deployed = json.loads(Path("deployed.json").read_text())
wrong = [name for name, digest in deployed.items() if manifest["handlers"].get(name) != digest]
if wrong:
    sys.exit(f"deployed code differs from acme/api's build for: {', '.join(wrong)}")
print(f"GET https://api.acme.example.com/health -> 200 (acme/api {manifest['commit'][:12]})")
for name in sorted(deployed):
    print(f"acme-{name}: sha256 {deployed[name][:12]} is acme/api's build, ok")
