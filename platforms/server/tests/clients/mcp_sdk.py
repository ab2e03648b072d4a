"""The official MCP Python SDK (`mcp`) against memkern (run by tests/mcp.rs).

Usage:
  mcp_sdk.py http URL KEY_A KEY_B   streamable HTTP on `memkern serve` (/mcp)
  mcp_sdk.py stdio MEMKERN DATA_DIR  `memkern mcp --as alice` and `--as bob`

Checks: the tools are listed with input schemas; add / search / get /
history / update / delete round trip for alice; bob's client sees none of
alice's memories (search finds nothing, get is refused as not found).
Prints one JSON line; any failed check raises (exit status 1).
"""

import json
import sys

import anyio
import mcp
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

TOOLS = {"add", "search", "get", "update", "delete", "list", "history", "rollback",
         "chat", "cube_create", "cube_share", "stats", "modules"}


def data(result):
    """A tool result's structured content (the runtime's JSON)."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def session_do(streams, work):
    read, write = streams[0], streams[1]
    async with mcp.ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


async def as_alice(session):
    seen = {}
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    assert TOOLS <= names, names
    assert all(t.input_schema.get("type") == "object" for t in tools)
    seen["tools"] = sorted(names)
    added = data(await session.call_tool("add", {"text": "My bike is a green Brompton."}))
    assert added["action"] == "stored", added
    mid = added["id"]
    hits = data(await session.call_tool("search", {"query": "What bike do I have?", "k": 5}))
    texts = [h["memory"]["text"] for h in (hits if isinstance(hits, list) else hits["result"])]
    assert "My bike is a green Brompton." in texts, texts
    got = data(await session.call_tool("get", {"id": mid}))
    assert got["text"] == "My bike is a green Brompton.", got
    upd = data(await session.call_tool("update", {"id": mid, "text": "My bike is a red Brompton."}))
    assert upd["version"] == 2, upd
    hist = data(await session.call_tool("history", {"id": mid}))
    versions = hist if isinstance(hist, list) else hist["result"]
    assert [v["version"] for v in versions] == [1, 2], versions
    # A second memory that stays, for bob's client to (not) find.
    kept = data(await session.call_tool("add", {"text": "My locker code is on a note in my wallet."}))
    seen["kept"] = kept["id"]
    deleted = data(await session.call_tool("delete", {"id": mid}))
    assert deleted["versions"] == 2, deleted
    gone = await session.call_tool("get", {"id": mid})
    assert gone.is_error and data(gone)["error"]["status"] == 404, gone
    bad = await session.call_tool("get", {"id": "not-an-id"})
    assert bad.is_error and data(bad)["error"]["status"] == 400, bad
    seen["alice_modules"] = module_ids(data(await session.call_tool("modules", {})))
    return seen


def module_ids(mods):
    """The ids of a `modules` tool answer."""
    found = mods if isinstance(mods, list) else mods["result"]
    return [m["manifest"]["id"] for m in found]


def as_bob(kept):
    async def work(session):
        hits = data(await session.call_tool("search", {"query": "locker code wallet", "k": 10}))
        found = hits if isinstance(hits, list) else hits["result"]
        assert found == [], found
        theirs = await session.call_tool("get", {"id": kept})
        assert theirs.is_error and data(theirs)["error"]["status"] == 404, theirs
        mods = module_ids(data(await session.call_tool("modules", {})))
        return {"bob_hits": len(found), "bob_modules": mods}
    return work


async def over_http(url, key_a, key_b):
    out = {}
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key_a}"}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            out.update(await session_do(streams, as_alice))
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key_b}"}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            out.update(await session_do(streams, as_bob(out["kept"])))
    return out


async def over_stdio(memkern, data_dir):
    out = {}
    for user, work in (("alice", as_alice), ("bob", None)):
        params = StdioServerParameters(
            command=memkern,
            args=["mcp", "--data-dir", data_dir, "--no-embed", "--as", user, "--no-llm"],
        )
        async with stdio_client(params) as streams:
            out.update(await session_do(streams, work or as_bob(out["kept"])))
    return out


def main():
    mode = sys.argv[1]
    if mode == "http":
        out = anyio.run(over_http, sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        out = anyio.run(over_stdio, sys.argv[2], sys.argv[3])
    print(json.dumps(out))


main()
