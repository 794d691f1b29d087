"""Screenshot Label Studio's labelling view of a spans task with the teacher's predicted regions:
docs/review_spans.png.

    .venv/bin/python scripts/review_screenshot.py [OUTPUT.png]

Needs .venv-labelstudio (scripts/install_labelstudio.sh) and headless Chromium (Debian package
`chromium`). It writes a few labelled rows by hand, exports them with `export_review`, starts Label
Studio on loopback, creates a project with our labelling config, imports the tasks, logs in through
the login form and drives Chromium over the DevTools protocol: set the session cookie, open the task,
wait until the regions are drawn, capture the page.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import labelstudio_harness as ls  # noqa: E402
from pipeline.config import Config, DataConfig, Label, TaskConfig, TeacherConfig  # noqa: E402
from pipeline.review import export_review  # noqa: E402

WIDTH, HEIGHT = 1400, 900
LABELS = [("PER", "a person"), ("LOC", "a place"), ("ORG", "an organisation")]
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("label", pa.string()),
                  ("score", pa.float64())])
ROWS = [  # (text, consistency, [(entity, label, share of the samples naming it)])
    ("Alice Johnson flew from Paris to Berlin on Monday to meet the Acme Robotics team about the Orion deal.",
     0.375, [("Alice Johnson", "PER", 0.75), ("Paris", "LOC", 1.0), ("Berlin", "LOC", 0.875),
             ("Acme Robotics", "ORG", 0.5), ("Orion", "ORG", 0.375)]),
    ("The mayor of Lyon thanked Médecins Sans Frontières.", 0.625,
     [("Lyon", "LOC", 1.0), ("Médecins Sans Frontières", "ORG", 0.625)]),
    ("Bob said the update broke everything.", 1.0, [("Bob", "PER", 1.0)]),
]
# True once the labelling view shows the text and at least one region drawn on it.
READY_JS = """(() => {
  const regions = document.querySelectorAll('.htx-highlight, [class*="highlight"]');
  return document.body.innerText.includes(%s) && regions.length > 0;
})()"""


def write_labels(root: Path) -> None:
    rows = []
    for i, (text, consistency, entities) in enumerate(ROWS):
        spans = [{"start": text.index(entity), "end": text.index(entity) + len(entity), "label": label,
                  "score": share} for entity, label, share in entities]
        rows.append({"id": f"demo-{i}", "text": text, "votes": [], "spans": spans, "consistency": consistency,
                     "n_valid": 8, "rationale": None, "teacher_model": "Qwen/Qwen2.5-7B-Instruct",
                     "prompt_hash": "3f2a9c1b7d4e5a60"})
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("votes", pa.list_(pa.string())),
                        ("spans", pa.list_(SPAN)), ("consistency", pa.float64()), ("n_valid", pa.int32()),
                        ("rationale", pa.string()), ("teacher_model", pa.string()),
                        ("prompt_hash", pa.string())])
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "data" / "part-0.parquet")


class DevTools:
    """Chrome DevTools protocol calls over one page's websocket."""

    def __init__(self, ws: Any):
        self.ws, self.next_id = ws, 0

    async def __call__(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})


async def capture(url: str, base: str, cookies: dict[str, str], ready_js: str, output: Path,
                  profile: Path) -> None:
    import aiohttp

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json") as reply:
                page = next(t for t in await reply.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = DevTools(ws)
                await cdp("Network.enable")
                for name, value in cookies.items():
                    await cdp("Network.setCookie", name=name, value=value, url=base)
                await cdp("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                          deviceScaleFactor=1, mobile=False)
                await cdp("Page.navigate", url=url)
                began = time.monotonic()
                while time.monotonic() - began < 90:
                    state = await cdp("Runtime.evaluate", expression=ready_js, returnByValue=True)
                    if state.get("result", {}).get("value") is True:
                        break
                    await asyncio.sleep(0.5)
                else:
                    text = await cdp("Runtime.evaluate", expression="document.body.innerText",
                                     returnByValue=True)
                    raise RuntimeError(f"{url}: no regions drawn after 90 s; the page says: "
                                       f"{str(text.get('result', {}).get('value'))[:1000]}")
                await asyncio.sleep(1.5)  # let the last layout and fonts settle
                shot = await cdp("Page.captureScreenshot", format="png")
        output.write_bytes(base64.b64decode(shot["data"]))
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # Chromium and the helpers it started, in their own group
        process.wait(timeout=20)


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "review_spans.png"
    if not ls.installed():
        raise SystemExit(f"Label Studio is not installed in {ls.LS_VENV}: run scripts/install_labelstudio.sh")
    with tempfile.TemporaryDirectory(prefix="review-screenshot-") as tmp_dir:
        tmp = Path(tmp_dir)
        write_labels(tmp / "labels")
        task = TaskConfig(name="entities", instruction="Mark people, places and organisations.", type="spans",
                          labels=[Label(name, description) for name, description in LABELS])
        config = Config(task=task, teacher=TeacherConfig(model="Qwen/Qwen2.5-7B-Instruct"),
                        data=DataConfig(input="unused", output=str(tmp / "labels")))
        export_review(config, str(tmp / "review"), limit=10)
        tasks = json.loads((tmp / "review" / "tasks.json").read_text())
        with ls.LabelStudioServer(tmp / "label-studio") as server:
            api = server.api()
            label_config = (tmp / "review" / "label_config.xml").read_text()
            project = api.create_project("raydistill review: entities", label_config)
            api.import_tasks(project, tasks)
            first = api.tasks(project)[0]  # the most uncertain row
            url = f"{server.url}/projects/{project}/data?task={first['id']}"
            ready = READY_JS % json.dumps(first["data"]["text"][:40])
            asyncio.run(capture(url, server.url, api.session_cookies(), ready, output, tmp / "chromium"))
    print(f"wrote {output} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
