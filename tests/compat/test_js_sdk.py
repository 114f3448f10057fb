"""Microsoft's JavaScript SDKs against Keyhaven: a Node application
(tests/js/smoke.mjs) authenticates with ClientSecretCredential and does the
secret, key and certificate steps, with challenge resource verification on,
checking every result with Node's own crypto. scripts/compat installs Node
(Debian) and the pinned packages (npm) into KEYHAVEN_JS_DIR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from khcompat import unique


def test_a_node_application_uses_the_javascript_sdks(server):
    js_dir = os.environ.get("KEYHAVEN_JS_DIR")
    assert js_dir and (Path(js_dir) / "node_modules").is_dir(), (
        "KEYHAVEN_JS_DIR with the JavaScript SDKs is not set up: run through scripts/compat")
    node = shutil.which("node")
    assert node, "node is not installed"
    env = dict(os.environ)
    env.update({
        "KH_VAULT_URL": server.vault_url,
        "KH_TENANT_ID": server.tenant_id,
        "KH_CLIENT_ID": server.client_id,
        "KH_CLIENT_SECRET": server.client_secret,
        "KH_AUTHORITY": server.authority_host,
        "KH_PREFIX": unique("js"),
        "NODE_EXTRA_CA_CERTS": server.ca_cert,
    })
    proc = subprocess.run([node, "smoke.mjs"], cwd=js_dir, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"node exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"ok": True, "steps": ["secrets", "keys", "certificates"]}
