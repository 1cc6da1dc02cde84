// Which MCP servers a person can reach, as the console needs it for the
// Servers column, the create dialog's checklist and "MCP Server Access".
// An admin sees every server and every access rule, so the reach of any user
// is worked out from the rules, as the control plane does; anyone else gets
// exactly the servers they reach from the API.

import { list } from './api.js';

function ruleApplies(rule, userId) {
  return rule.subjects.includes('*') || rule.subjects.includes(`user:${userId}`);
}

/** Loads what the signed-in person may know; returns
 *  {servers, reachable(userId) -> Set of names}. */
export async function loadAccess(me) {
  const servers = await list('/api/mcp-servers');
  const names = servers.map((s) => s.name);
  if (me.role !== 'admin') {
    const mine = new Set(names);
    return { servers, reachable: () => mine };
  }
  const rules = await list('/api/access-rules');
  return {
    servers,
    reachable(userId) {
      const reach = new Set();
      for (const rule of rules.filter((r) => ruleApplies(r, userId))) {
        const ruleServers = rule.mcpServerIds.includes('*') ? names : rule.mcpServerIds;
        for (const name of ruleServers) if (names.includes(name)) reach.add(name);
      }
      return reach;
    },
  };
}

/** The servers a key covers now: [{name, reachable}]. A key for all
 *  servers covers what its owner reaches. */
export function keyServers(key, reach) {
  if (key.servers) return key.servers;
  if (key.mcpServerIds.includes('*')) return [...reach].sort().map((name) => ({ name, reachable: true }));
  return key.mcpServerIds.map((name) => ({ name, reachable: reach.has(name) }));
}
