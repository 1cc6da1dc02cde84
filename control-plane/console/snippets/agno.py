import asyncio
import os

from agno.agent import Agent
from agno.tools.mcp import MCPTools

key = {{KEY}}


async def main():
    async with MCPTools(
        transport="streamable-http",
        url="{{URL}}",
        headers={"Authorization": f"Bearer {key}"},
    ) as mcp_tools:
        agent = Agent(tools=[mcp_tools])
        print(sorted(mcp_tools.functions))


asyncio.run(main())
