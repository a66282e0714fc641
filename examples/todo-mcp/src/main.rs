//! todo-mcp: a sample MCP server protected by moat-guard.
fn main() {}
