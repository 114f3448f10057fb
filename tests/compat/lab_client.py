"""Runs inside a test network namespace (a "VM" of the network lab): reads
one secret with Microsoft's SDK, as the seed lab's program does, and prints
the outcome as JSON. Names under `.localhost` resolve to the lab's host
address (or, for the vault's own name, to the address given: a private
endpoint's, as a private DNS zone would answer)."""

from __future__ import annotations

import json
import socket
import sys

ARGS = json.loads(sys.argv[1])
_real_getaddrinfo = socket.getaddrinfo


def _lab_getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, str) and (host.endswith(".localhost") or host == "localhost"):
        target = ARGS["vault_ip"] if host == ARGS["vault_host"] else ARGS["host_ip"]
        return _real_getaddrinfo(target, port, *args, **kwargs)
    return _real_getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _lab_getaddrinfo

from azure.core.exceptions import HttpResponseError  # noqa: E402
from azure.identity import ClientSecretCredential, ManagedIdentityCredential  # noqa: E402
from azure.keyvault.secrets import SecretClient  # noqa: E402

KW = dict(connection_timeout=5, read_timeout=20, retry_total=0)


def main() -> None:
    if ARGS.get("management_url"):
        import requests
        r = requests.get(ARGS["management_url"], headers={"Authorization": f"Bearer {ARGS['management_token']}"},
                         verify=ARGS["ca"], timeout=20)
        print(json.dumps({"ok": r.status_code == 200, "status": r.status_code}))
        return
    if ARGS["mode"] == "mi":
        cred = ManagedIdentityCredential(**KW)
    else:
        cred = ClientSecretCredential(ARGS["tenant"], ARGS["client_id"], ARGS["client_secret"],
                                      authority=ARGS["authority"], disable_instance_discovery=True, **KW)
    client = SecretClient(ARGS["vault_url"], cred, **KW)
    try:
        value = client.get_secret(ARGS["secret"]).value
        print(json.dumps({"ok": True, "value": value}))
    except HttpResponseError as e:
        body = {}
        try:
            body = e.response.json().get("error", {})
        except Exception:  # noqa: BLE001 - report whatever came back
            pass
        print(json.dumps({"ok": False, "status": e.status_code, "code": body.get("code"),
                          "inner": (body.get("innererror") or {}).get("code"), "message": body.get("message")}))


if __name__ == "__main__":
    main()
