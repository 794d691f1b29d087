"""A real Label Studio server on loopback, and the few REST calls a review round trip needs.

Label Studio lives in its own virtualenv (``scripts/install_labelstudio.sh``: its pins clash with
ours), so it is driven from here as a process and over plain HTTP: no SDK in our venv. Used by
tests/test_review.py and scripts/review_screenshot.py.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = Path(os.environ.get("LS_VENV", ROOT / ".venv-labelstudio"))
LS_BIN = LS_VENV / "bin" / "label-studio"
TEMPLATE = LS_VENV / "template-data" / "label_studio.sqlite3"  # migrated once by the install script
USER, PASSWORD = "reviewer@example.com", "review-secret-1"
TOKEN = "raydistill0review0token0000000001"

# No calls home from a test server: the PyPI version check at start-up, usage analytics, Sentry.
QUIET_ENV = {"LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
             "FRONTEND_SENTRY_DSN": ""}


INSTALL_PID = ROOT / ".labelstudio-install.pid"  # an install running in the background (make test)
INSTALL_LOG = ROOT / ".labelstudio-install.log"


def installed() -> bool:
    return LS_BIN.exists() and TEMPLATE.exists()


def wait_for_install(timeout_s: float = 900.0) -> bool:
    """Wait for a background install (``install_labelstudio.sh --background``) to end; whether Label
    Studio is installed then."""
    deadline = time.monotonic() + timeout_s
    while INSTALL_PID.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(INSTALL_PID.read_text().strip()), 0)
        except (ValueError, ProcessLookupError):
            break  # the install has ended
        time.sleep(2)
    return installed()


def install_log_tail(lines: int = 30) -> str:
    if not INSTALL_LOG.exists():
        return "(no install log)"
    return "\n".join(INSTALL_LOG.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabelStudioServer:
    """``label-studio start`` on 127.0.0.1 with a data directory of its own, a user and an API token.

    The data directory starts from the install script's migrated database when there is one (a
    few seconds to start instead of minutes of migrations).
    """

    def __init__(self, data_dir: Path, port: Optional[int] = None, timeout_s: float = 600.0):
        self.data_dir, self.port, self.timeout_s = Path(data_dir), port or free_port(), timeout_s
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None
        self.start_seconds = 0.0
        self.log_path = self.data_dir / "server.log"

    def __enter__(self) -> "LabelStudioServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if TEMPLATE.exists() and not (self.data_dir / TEMPLATE.name).exists():
            shutil.copy(TEMPLATE, self.data_dir / TEMPLATE.name)
        env = {**os.environ, **QUIET_ENV, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir)}
        command = [str(LS_BIN), "start", "--port", str(self.port), "--internal-host", "127.0.0.1",
                   "--no-browser", "--username", USER, "--password", PASSWORD, "--user-token", TOKEN,
                   "--enable-legacy-api-token", "--log-level", "WARNING"]
        began = time.monotonic()
        with open(self.log_path, "wb") as log:
            # Its own session: stop() ends the server and anything it started, and only that.
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.data_dir, start_new_session=True)
        while time.monotonic() - began < self.timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.start_seconds = time.monotonic() - began
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"label-studio not ready on {self.url} after {self.timeout_s:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def api(self) -> "LabelStudioAPI":
        return LabelStudioAPI(self.url, TOKEN)


class LabelStudioAPI:
    """Label Studio's REST API with a legacy token (``Authorization: Token ...``)."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url.rstrip("/"), token

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {err.read()[:2000]!r}") from err
        return json.loads(payload) if payload else None

    def create_project(self, title: str, label_config: str) -> int:
        return self.request("POST", "/api/projects", {"title": title, "label_config": label_config})["id"]

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", f"/api/projects/{project}/import", tasks)

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """The project's tasks (id and data), in id order."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            reply = self.request("GET", "/api/tasks", project=project, page=page, page_size=100)
            found += reply["tasks"]
            if len(found) >= reply["total"] or not reply["tasks"]:
                return sorted(found, key=lambda task: task["id"])
            page += 1

    def annotate(self, task: int, result: list[dict[str, Any]], cancelled: bool = False) -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{task}/annotations",
                            {"result": result, "was_cancelled": cancelled})

    def export(self, project: int) -> list[dict[str, Any]]:
        """The project's JSON export, every task (Label Studio leaves tasks without annotations out
        unless asked)."""
        return self.request("GET", f"/api/projects/{project}/export", exportType="JSON",
                            download_all_tasks="true")

    def session_cookies(self, user: str = USER, password: str = PASSWORD) -> dict[str, str]:
        """Cookies of a browser session logged in through the login form (for screenshots)."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{self.url}/user/login/", timeout=60).read().decode("utf-8")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        form = {"email": user, "password": password}
        if csrf:
            form["csrfmiddlewaretoken"] = csrf.group(1)
        login = f"{self.url}/user/login/"
        request = urllib.request.Request(login, data=urllib.parse.urlencode(form).encode(),
                                         headers={"Referer": login})
        opener.open(request, timeout=60).read()
        cookies = {cookie.name: cookie.value for cookie in jar}
        if "sessionid" not in cookies:
            raise RuntimeError(f"login to {self.url} as {user} gave no session cookie "
                               f"(cookies: {sorted(cookies)})")
        return cookies
