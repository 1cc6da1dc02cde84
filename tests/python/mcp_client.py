"""Calls an MCP server through the keygate edge with the official Python MCP SDK.

Used by tests/tests/mcp.rs: it connects over Streamable HTTP with
`Authorization: Bearer <key>`, lists the tools, calls `echo` (when offered)
and `whoami`, and prints one JSON object on stdout. On any failure it prints
`{"error": "..."}` and exits 2, so the Rust test can assert both outcomes.
Either way the output carries `httpStatuses`: every HTTP status the SDK got
back, with the request's method and the `WWW-Authenticate` challenge, if
any (a session's closing `DELETE` shows there too), because the SDK reports
an edge refusal only as a generic MCP error.

Usage: mcp_client.py URL [MODE]   (MODE: "auto", the SDK's default, or
"legacy" for the initialize handshake with a session; the key is read from the
KEYGATE_TEST_KEY env var, so it never shows up in a process listing)
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    """Joins the text blocks of a CallToolResult."""
    return "".join(getattr(block, "text", "") for block in result.content)


async def run(url: str, mode: str, key: str, seen: list) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx2.Timeout(20.0, read=20.0)

    async def record(response):
        seen.append({
            "method": response.request.method,
            "status": response.status_code,
            "wwwAuthenticate": response.headers.get("www-authenticate"),
        })

    hooks = {"response": [record]}
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=20.0) as client:
            tools = sorted(tool.name for tool in (await client.list_tools()).tools)
            report = {
                "protocolVersion": client.protocol_version,
                "serverName": client.server_info.name if client.server_info else None,
                "tools": tools,
            }
            if "echo" in tools:
                echoed = await client.call_tool("echo", {"text": "hello from python"})
                report["echo"] = text_of(echoed)
                report["echoIsError"] = bool(echoed.is_error)
            whoami = await client.call_tool("whoami", {})
            report["whoami"] = whoami.structured_content
            return report


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(json.dumps({"error": "usage: mcp_client.py URL [auto|legacy]"}))
        return 2
    mode = sys.argv[2] if len(sys.argv) == 3 else "auto"
    key = os.environ.get("KEYGATE_TEST_KEY")
    if not key:
        print(json.dumps({"error": "KEYGATE_TEST_KEY is not set"}))
        return 2
    seen = []
    try:
        report = asyncio.run(run(sys.argv[1], mode, key, seen))
    except BaseException as error:  # noqa: BLE001 - report every failure as data
        # Exception groups from anyio hide the HTTP error one level down.
        inner = getattr(error, "exceptions", None)
        detail = repr(inner[0]) if inner else repr(error)
        print(json.dumps({"error": detail, "httpStatuses": seen}))
        return 2
    report["httpStatuses"] = seen
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
