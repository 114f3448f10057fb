"""A stand-in browser for `az login` (the BROWSER environment variable names
it): it opens the sign-in page the CLI asks for, fills in the user name and
password from KH_BROWSER_USER / KH_BROWSER_PASSWORD, submits the form, and
follows the redirect to the CLI's loopback listener, as a person with a
browser would. It answers the CLI at once and does the work in a detached
child, because Python's webbrowser waits for the browser command to exit.
What happened is written to KH_BROWSER_LOG."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys
import urllib.parse

import requests


class _Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        elif tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")


def sign_in(url: str) -> dict:
    ca = os.environ["KH_BROWSER_CA"]
    page = requests.get(url, verify=ca, timeout=30)
    log = {"page_status": page.status_code}
    if page.status_code != 200:
        log["page"] = page.text[:500]
        return log
    form = _Form()
    form.feed(page.text)
    data = dict(form.fields, username=os.environ["KH_BROWSER_USER"], password=os.environ["KH_BROWSER_PASSWORD"])
    post = requests.post(urllib.parse.urljoin(url, form.action), data=data, verify=ca, timeout=30,
                         allow_redirects=False)
    log["post_status"] = post.status_code
    if post.status_code == 302:
        # response_mode=query: a redirect to the listener.
        location = post.headers.get("Location", "")
        log["redirect"] = location.split("?")[0]
        landing = requests.get(location, timeout=30)
    else:
        # response_mode=form_post: a page whose form posts to the listener.
        answer = _Form()
        answer.feed(post.text)
        if post.status_code != 200 or not answer.action or "code" not in answer.fields:
            log["post"] = post.text[:500]
            return log
        log["redirect"] = answer.action
        log["form_post"] = True
        landing = requests.post(answer.action, data=answer.fields, timeout=30)
    log["landing_status"] = landing.status_code
    return log


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        try:
            result = sign_in(sys.argv[2])
        except Exception as exc:  # recorded for the test to show
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with open(os.environ["KH_BROWSER_LOG"], "w") as f:
            json.dump(result, f)
        return
    subprocess.Popen([sys.executable, __file__, "--child", sys.argv[1]], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
