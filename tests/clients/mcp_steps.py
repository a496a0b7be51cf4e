#!/usr/bin/env python3
"""Talk to an MCP server with the official MCP Python SDK and print what it answered, as JSON.

usage: mcp_steps.py http URL KEY [MODE] < steps.json     Streamable HTTP, Authorization: Bearer KEY
       mcp_steps.py stdio COMMAND [ARG…] < steps.json   starts COMMAND and speaks over its
                                                        stdin/stdout (it reads its settings,
                                                        MAILROOM_API_URL and MAILROOM_API_KEY,
                                                        from this process's environment)

MODE is the SDK's connect mode: "auto" (default: server/discover, falling back to initialize)
or "legacy" (the initialize handshake). steps.json is a list of steps:
  ["list_tools"]
  ["call", "tool_name", {"arg": "value", ...}]
A string argument "{{N:/json/pointer}}" is replaced by that part of step N's structured
result (step 0 is the first), e.g. "{{0:/result/id}}".

The output is {"server": {...}, "steps": [...]}: the server's name, version and protocol
version, and per step
  list_tools: {"tools": [{"name", "title", "description", "inputSchema", "annotations"}]}
  call:       {"is_error": bool, "structured": {...} or null, "text": "..."}

Needs the SDK: pip install mcp (exit status 3 and a message when it is missing).
"""
import asyncio
import json
import os
import re
import sys

try:
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
except ImportError as e:  # pragma: no cover - the message is the point
    print(
        f"the official MCP Python SDK is missing ({e}); install it with: pip install mcp",
        file=sys.stderr,
    )
    sys.exit(3)

REF = re.compile(r"^\{\{(\d+):(/[^}]*)\}\}$")


def pointer(doc, path):
    for part in path.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def resolve(value, done):
    if isinstance(value, str):
        m = REF.match(value)
        if m:
            return pointer(done[int(m.group(1))]["structured"], m.group(2))
        return value
    if isinstance(value, list):
        return [resolve(v, done) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, done) for k, v in value.items()}
    return value


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model else None


async def run(client, steps):
    done = []
    for step in steps:
        if step[0] == "list_tools":
            tools = (await client.list_tools()).tools
            done.append({"tools": [dump(t) for t in tools]})
        elif step[0] == "call":
            result = await client.call_tool(step[1], resolve(step[2], done))
            text = "".join(getattr(c, "text", "") for c in result.content)
            done.append(
                {
                    "is_error": bool(result.is_error),
                    "structured": result.structured_content,
                    "text": text,
                }
            )
        else:
            raise SystemExit(f"unknown step {step[0]!r}")
    info = client.server_info
    return {
        "server": {
            "name": info.name if info else None,
            "version": info.version if info else None,
            "protocol_version": client.protocol_version,
        },
        "steps": done,
    }


async def main():
    steps = json.load(sys.stdin)
    kind = sys.argv[1]
    if kind == "http":
        url, key = sys.argv[2], sys.argv[3]
        mode = sys.argv[4] if len(sys.argv) > 4 else "auto"
        headers = {"Authorization": f"Bearer {key}"}
        timeout = httpx2.Timeout(30.0, read=120.0)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode, raise_exceptions=True) as client:
                out = await run(client, steps)
    elif kind == "stdio":
        params = StdioServerParameters(
            command=sys.argv[2], args=sys.argv[3:], env=dict(os.environ)
        )
        async with Client(params, raise_exceptions=True) as client:
            out = await run(client, steps)
    else:
        raise SystemExit(f"unknown transport {kind!r}; use http or stdio")
    print(json.dumps(out))


asyncio.run(main())
