//! moat-guard: the resource-server library for MCP servers protected by Moat.
