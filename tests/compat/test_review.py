"""Issue 22's outside review, over a real TLS connection: what a client on
the wire sees."""

from __future__ import annotations

import uuid

import requests

from khcompat import HTTP_TIMEOUT


def _arm_token(server) -> str:
    return server.token(server.management_scope)


def test_an_early_arm_answer_reads_the_whole_body_first(server):
    """Defect 5: ARM answered 404 for an unknown subscription before the body
    arrived and closed the connection, so a client still sending saw a
    connection error instead of the 404. The body is 3.5 MB, so it cannot sit
    in socket buffers unread."""
    body = b'{"location": "local", "properties": {"pad": "' + b"x" * 3_500_000 + b'"}}'
    with requests.Session() as s:
        s.verify = server.ca_cert
        headers = {"Authorization": f"Bearer {_arm_token(server)}", "Content-Type": "application/json"}
        url = f"{server.management_url.rstrip('/')}/subscriptions/{uuid.uuid4()}/resourceGroups/rg-early"
        r = s.put(url, params={"api-version": "2021-04-01"}, data=body, headers=headers, timeout=HTTP_TIMEOUT)
        assert r.status_code == 404, r.text[:300]
        assert r.json()["error"]["code"] == "SubscriptionNotFound"
        # The same session goes on working.
        r = s.get(f"{server.management_url.rstrip('/')}/subscriptions", params={"api-version": "2021-04-01"},
                  headers=headers, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text[:300]


def test_oversized_headers_get_an_azure_error_body(server):
    """Defect 3: 431 had an empty body (hyper's own answer)."""
    url = f"{server.vault_url.rstrip('/')}/secrets"
    big = {"X-Filler": "a" * (20 * 1024)}
    r = requests.get(url, params={"api-version": "7.5"}, headers=big, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "RequestHeaderFieldsTooLarge"
    many = {f"X-H{i}": "v" for i in range(150)}
    r = requests.get(url, params={"api-version": "7.5"}, headers=many, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "RequestHeaderFieldsTooLarge"


def test_a_body_declared_too_large_is_refused_at_once(server):
    """Defect 3: the 413 came only after the body was sent. With a declared
    Content-Length over the limit and no body at all, the answer still comes."""
    import socket
    import ssl

    host = f"dev.{server.vault_host_suffix}"
    name, port = host.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=server.ca_cert)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=HTTP_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(
                f"PUT /secrets/big?api-version=7.5 HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n".encode()
            )
            head = tls.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "RequestEntityTooLarge" in head or "Content-Length" in head
