"""GraphiQL on GET /graphql, with its assets served by the app so it works air-gapped.

graphiql/package.json and its committed package-lock.json pin GraphiQL and React;
`reelgraph build-graphiql` runs `npm ci` there, and the page then loads the four files it
needs from graphiql/node_modules through /graphiql/assets/<name> (nothing else in
node_modules is reachable). When they are not installed, the page loads the same files
from unpkg, pinned by Subresource Integrity. The page's own script is served from here,
so it runs no inline script and its Content-Security-Policy allows scripts from 'self'
only (plus unpkg in the CDN fallback).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

ASSET_PATH = "/graphiql/assets"
CDN = "https://unpkg.com"
TOKEN_PLACEHOLDER = '{"Authorization": "Bearer <paste a token printed by reelgraph serve --demo>"}'


@dataclass(frozen=True)
class Asset:
    name: str  # served as ASSET_PATH/<name>
    package: str
    version: str  # kept equal to graphiql/package-lock.json by tests/test_graphiql.py
    file: str  # inside the package
    integrity: str  # SRI: the same bytes on unpkg and in node_modules

    @property
    def cdn_url(self) -> str:
        return f"{CDN}/{self.package}@{self.version}/{self.file}"


ASSETS = (
    Asset(
        "react.js",
        "react",
        "18.3.1",
        "umd/react.production.min.js",
        "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    ),
    Asset(
        "react-dom.js",
        "react-dom",
        "18.3.1",
        "umd/react-dom.production.min.js",
        "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    ),
    Asset(
        "graphiql.js",
        "graphiql",
        "4.1.2",
        "graphiql.min.js",
        "sha384-9XdHu7ajgGJziD4J1zNBKQ842Q/+zZfDv+ib1eMhZWBH6hPAs806x+Jbcf0yNO6B",
    ),
    Asset(
        "graphiql.css",
        "graphiql",
        "4.1.2",
        "graphiql.min.css",
        "sha384-1el1QShFBnnXTx9x/Cprg82hZWKt0ry29OAYIXt05swbi0KcZDFoj0CWguMpopJr",
    ),
)

EXAMPLES = [
    # One tab each; GraphiQL keeps the user's own tabs in localStorage after the first visit.
    {
        "query": """# Paste a token into the Headers pane below:
#   {"Authorization": "Bearer rg_..."}
# `reelgraph serve --demo` prints one per role;
# `reelgraph create-user` makes more.
# Run: Ctrl-Enter or the run button. More in the other tabs.

query Vods($first: Int = 10, $after: String) {
  viewer { username role }
  vods(
    first: $first
    after: $after
    orderBy: {field: CREATED_AT, direction: DESC}
  ) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      title
      status
      durationSeconds
      owner { username }
    }
  }
}
""",
    },
    {
        "query": """# A live stream's chat, newest first. Scroll back with
# `after: <pageInfo.endCursor>`; toward newer: `last`/`before`.
query ChatScrollback($after: String) {
  liveStreams(first: 1, status: LIVE) {
    nodes {
      id
      title
      chatMessages(first: 20, after: $after) {
        pageInfo { hasNextPage endCursor }
        nodes { id body createdAt author { username } }
      }
    }
  }
}

# New messages as they are sent (put a stream id in Variables).
subscription ChatMessageAdded($streamId: ID!) {
  chatMessageAdded(streamId: $streamId) {
    id
    body
    author { username }
  }
}
""",
        "variables": '{"streamId": "<a LiveStream id>"}',
    },
    {
        "query": """# Ingest bitrate over the last 30 s (cached 3 s) and viewers.
query LiveHealth {
  liveStreams(status: LIVE) {
    nodes { id title viewerCount bitrateKbps bitrateUpdatedAt }
  }
}

# The same figures every few seconds until the stream ends
# (put a stream id in Variables).
subscription LiveStreamHealth($streamId: ID!) {
  liveStreamHealth(streamId: $streamId) { bitrateKbps viewerCount at }
}
""",
        "variables": '{"streamId": "<a LiveStream id>"}',
    },
]

# Inert JSON for the boot script; no "<" in it can close the <script> element.
PAGE_CONFIG = json.dumps({"tabs": EXAMPLES, "headers": TOKEN_PLACEHOLDER}).replace("<", "\\u003c")

BOOT_JS = """"use strict";
(function () {
  var config = JSON.parse(document.getElementById("reelgraph-graphiql").textContent);
  var url = window.location.href.split(/[?#]/)[0];
  var ws = new URL(url);
  ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
  // Headers from the editor reach the WebSocket's connection_init payload too.
  var fetcher = GraphiQL.createFetcher({ url: url, subscriptionUrl: ws.toString() });
  var tabs = config.tabs.map(function (tab) {
    return { query: tab.query, variables: tab.variables || null, headers: config.headers };
  });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: tabs,
      defaultHeaders: config.headers,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
    })
  );
})();
"""

PAGE_CSS = """html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; font-family: system-ui, sans-serif; }
#reelgraph-hint { padding: 6px 12px; font-size: 13px; background: #f3f4f7; color: #3b4b68;
  border-bottom: 1px solid #dde1ea; }
#reelgraph-hint code { background: #fff; padding: 1px 4px; border-radius: 3px; }
#graphiql { flex: 1; min-height: 0; display: flex; }
"""

OWN_FILES = {"reelgraph.js": BOOT_JS, "reelgraph.css": PAGE_CSS}
OWN_VERSIONS = {
    name: hashlib.sha256(text.encode()).hexdigest()[:12] for name, text in OWN_FILES.items()
}

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Every asset URL carries its version (or content hash), so it may be cached for good.
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


def built_assets(directory: Path) -> dict[str, Path] | None:
    """The asset files in `directory`/node_modules, or None unless every one is there."""
    files = {a.name: directory / "node_modules" / a.package / a.file for a in ASSETS}
    return files if all(path.is_file() for path in files.values()) else None


class GraphiQLPage:
    """The page and its assets: from `assets` (name -> file) when given, else from the CDN."""

    def __init__(self, *, assets: Mapping[str, Path] | None) -> None:
        self.assets = dict(assets) if assets is not None else None

    @classmethod
    def from_directory(cls, directory: Path) -> GraphiQLPage:
        return cls(assets=built_assets(directory))

    @property
    def offline(self) -> bool:
        return self.assets is not None

    def routes(self) -> list[Route]:
        return [Route(ASSET_PATH + "/{name}", self.asset, methods=["GET", "HEAD"])]

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name in OWN_FILES:
            media_type = MEDIA_TYPES[Path(name).suffix]
            return Response(OWN_FILES[name], media_type=media_type, headers=ASSET_HEADERS)
        path = (self.assets or {}).get(name)
        if path is None:
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=ASSET_HEADERS)

    def response(self, request: Request) -> HTMLResponse:
        return HTMLResponse(
            self.html(root_path=request.scope.get("root_path", "")),
            headers={
                "Content-Security-Policy": self.content_security_policy(),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    def content_security_policy(self) -> str:
        cdn = "" if self.offline else f" {CDN}"
        # GraphiQL's components inject <style> elements (scroll locks), hence inline styles;
        # scripts stay 'self' only: no inline script, no eval.
        return "; ".join(
            [
                "default-src 'none'",
                f"script-src 'self'{cdn}",
                f"style-src 'self' 'unsafe-inline'{cdn}",
                "img-src 'self' data:",
                "font-src 'self' data:",
                "connect-src 'self'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )

    def html(self, *, root_path: str = "") -> str:
        base = root_path + ASSET_PATH
        tags: dict[str, str] = {}
        for asset in ASSETS:
            if self.offline:
                src, extra = f"{base}/{asset.name}?v={asset.version}", ""
            else:
                src = asset.cdn_url
                extra = (
                    f' integrity="{asset.integrity}" crossorigin="anonymous"'
                    ' referrerpolicy="no-referrer"'
                )
            if asset.name.endswith(".css"):
                tags[asset.name] = f'<link rel="stylesheet" href="{src}"{extra}>'
            else:
                tags[asset.name] = f'<script src="{src}"{extra}></script>'
        source = (
            "served by this server"
            if self.offline
            else "from unpkg.com: <code>reelgraph build-graphiql</code> serves them locally"
        )
        return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Reelgraph GraphiQL</title>
<link rel="icon" href="data:,">
{tags["graphiql.css"]}
<link rel="stylesheet" href="{base}/reelgraph.css?v={OWN_VERSIONS["reelgraph.css"]}">
</head>
<body>
<div id="reelgraph-hint">Token: <b>Headers</b> pane,
<code>{{"Authorization": "Bearer rg_..."}}</code> (printed by <code>reelgraph serve --demo</code>
or <code>reelgraph create-user</code>). Assets {source}.
</div>
<div id="graphiql">Loading GraphiQL...</div>
<script type="application/json" id="reelgraph-graphiql">{PAGE_CONFIG}</script>
{tags["react.js"]}
{tags["react-dom.js"]}
{tags["graphiql.js"]}
<script src="{base}/reelgraph.js?v={OWN_VERSIONS["reelgraph.js"]}"></script>
</body>
</html>
"""


def build(directory: Path, *, which: Callable[[str], str | None] = shutil.which) -> int:
    """`npm ci` in `directory` from its lockfile; without npm, say the CDN is used."""
    npm = which("npm")
    if npm is None:
        print("npm is not on PATH: GraphiQL will load its assets from the CDN (unpkg.com).")
        return 0
    if not (directory / "package-lock.json").is_file():
        print(f"No package-lock.json in {directory}: GraphiQL will load its assets from the CDN.")
        return 0
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    status = subprocess.run(command, cwd=directory, check=False).returncode
    if status != 0:
        print(f"npm ci failed in {directory} (exit status {status}).")
        return status
    if built_assets(directory) is None:
        print(f"npm ci ran, but GraphiQL's files are missing from {directory / 'node_modules'}.")
        return 1
    print(f"GraphiQL assets installed in {directory / 'node_modules'}; served at {ASSET_PATH}/.")
    return 0
