import asyncio
import os

from langchain_mcp_adapters.client import MultiServerMCPClient

key = {{KEY}}


async def main():
    client = MultiServerMCPClient({
        "{{SERVER}}": {
            "transport": "streamable_http",
            "url": "{{URL}}",
            "headers": {"Authorization": f"Bearer {key}"},
        }
    })
    tools = await client.get_tools()
    print([tool.name for tool in tools])


asyncio.run(main())
