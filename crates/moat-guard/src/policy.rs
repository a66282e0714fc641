//! [`ScopePolicy`]: which scopes an MCP request needs. A base set applies to every request;
//! `tools/call` requests add the scopes of the called tool (read from the JSON-RPC body), other
//! JSON-RPC methods may add their own. For a JSON-RPC batch the union is required. A body that
//! is not a JSON-RPC message or batch fails closed (every scope; the guard answers it `400`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::ConfigError;
use crate::scope::is_scope_token;

/// Scope requirements of an MCP endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopePolicy {
    base: BTreeSet<String>,
    tools: BTreeMap<String, BTreeSet<String>>,
    methods: BTreeMap<String, BTreeSet<String>>,
    unknown_tool: Option<BTreeSet<String>>,
}

fn owned<I, S>(scopes: I) -> BTreeSet<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    scopes.into_iter().map(Into::into).collect()
}

impl ScopePolicy {
    /// No requirement beyond a valid token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scopes every request needs (e.g. `todo:read` to talk to the server at all).
    pub fn require<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.base.extend(owned(scopes));
        self
    }

    /// Scopes a `tools/call` of `tool` needs (in addition to the base set).
    pub fn tool<I, S>(mut self, tool: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools.entry(tool.into()).or_default().extend(owned(scopes));
        self
    }

    /// Scopes another JSON-RPC method needs (e.g. `resources/read`).
    pub fn method<I, S>(mut self, method: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.methods.entry(method.into()).or_default().extend(owned(scopes));
        self
    }

    /// Scopes a `tools/call` of a tool that is not listed needs (default: only the base set;
    /// the server answers unknown tools itself).
    pub fn unknown_tool<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.unknown_tool = Some(owned(scopes));
        self
    }

    /// True when the JSON-RPC body must be read to decide (tool or method entries exist).
    pub fn needs_body(&self) -> bool {
        !self.tools.is_empty() || !self.methods.is_empty() || self.unknown_tool.is_some()
    }

    /// Every scope named anywhere in the policy.
    pub fn all_scopes(&self) -> BTreeSet<String> {
        let mut out = self.base.clone();
        for s in self.tools.values().chain(self.methods.values()) {
            out.extend(s.iter().cloned());
        }
        if let Some(s) = &self.unknown_tool {
            out.extend(s.iter().cloned());
        }
        out
    }

    /// Checks that every scope is a valid RFC 6749 §3.3 scope-token.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.all_scopes().into_iter().find(|s| !is_scope_token(s)) {
            Some(bad) => Err(ConfigError::BadScope(bad)),
            None => Ok(()),
        }
    }

    /// Scopes needed by a request whose body parsed as `body`. `None` means the request has no
    /// JSON-RPC body to read (e.g. the `GET` opening the SSE stream): the base set.
    ///
    /// A body that is JSON but not a JSON-RPC message or a non-empty batch of them fails
    /// closed: it needs every scope the policy names, since nothing says which tool the server
    /// will make of it. The guard refuses such bodies with `400` before asking.
    pub fn needed_for(&self, body: Option<&Value>) -> BTreeSet<String> {
        let mut needed = self.base.clone();
        let messages = match body.map(json_rpc_messages) {
            None => Vec::new(),
            Some(Some(messages)) => messages,
            Some(None) => return self.all_scopes(),
        };
        for message in messages {
            let Some(method) = message.get("method").and_then(Value::as_str) else {
                continue;
            };
            if let Some(s) = self.methods.get(method) {
                needed.extend(s.iter().cloned());
            }
            if method == "tools/call" {
                let name = message.get("params").and_then(|p| p.get("name")).and_then(Value::as_str);
                match name.and_then(|n| self.tools.get(n)) {
                    Some(s) => needed.extend(s.iter().cloned()),
                    None => {
                        if let Some(s) = &self.unknown_tool {
                            needed.extend(s.iter().cloned());
                        }
                    }
                }
            }
        }
        needed
    }
}

/// The messages of a JSON-RPC request body: one message object (a request, notification or
/// response, JSON-RPC 2.0 §4, §5), or a non-empty batch (array) of them (§6). `None` for anything
/// else — a string, number or `null`, an empty batch, a batch holding non-objects — which a
/// JSON-RPC server answers only with `Invalid Request` errors (§6, examples in §7), and from
/// which no scope decision can be made.
pub(crate) fn json_rpc_messages(body: &Value) -> Option<Vec<&Value>> {
    match body {
        Value::Object(_) => Some(vec![body]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => Some(items.iter().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy() -> ScopePolicy {
        ScopePolicy::new()
            .require(["todo:read"])
            .tool("add_todo", ["todo:write"])
            .tool("list_todos", ["todo:read"])
            .method("resources/read", ["files:read"])
    }

    #[test]
    fn per_tool_and_batch_union() {
        let p = policy();
        let call = |name: &str| json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name}});
        assert_eq!(p.needed_for(None), set(&["todo:read"]));
        assert_eq!(p.needed_for(Some(&call("list_todos"))), set(&["todo:read"]));
        assert_eq!(p.needed_for(Some(&call("add_todo"))), set(&["todo:read", "todo:write"]));
        assert_eq!(p.needed_for(Some(&call("nope"))), set(&["todo:read"]));
        let batch = json!([call("list_todos"), call("add_todo"),
            {"jsonrpc":"2.0","id":3,"method":"resources/read","params":{}}]);
        assert_eq!(p.needed_for(Some(&batch)), set(&["files:read", "todo:read", "todo:write"]));
        let strict = p.clone().unknown_tool(["admin"]);
        assert_eq!(strict.needed_for(Some(&call("nope"))), set(&["admin", "todo:read"]));
        assert!(strict.needs_body());
        assert!(!ScopePolicy::new().require(["x"]).needs_body());
    }

    #[test]
    fn body_that_is_not_json_rpc_needs_every_scope() {
        let p = policy();
        let all = set(&["files:read", "todo:read", "todo:write"]);
        for body in [json!("tools/call"), json!(null), json!(42), json!([]), json!([1]), json!([{"method":"ping"}, 1])]
        {
            assert_eq!(p.needed_for(Some(&body)), all, "{body}");
            assert!(json_rpc_messages(&body).is_none(), "{body}");
        }
        // A client's response to a server request (no method) is JSON-RPC: base set only.
        assert_eq!(p.needed_for(Some(&json!({"jsonrpc":"2.0","id":1,"result":{}}))), set(&["todo:read"]));
    }

    #[test]
    fn validates_scope_tokens() {
        assert_eq!(policy().validate(), Ok(()));
        assert!(ScopePolicy::new().tool("t", ["a b"]).validate().is_err());
    }
}
