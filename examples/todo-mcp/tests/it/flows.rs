//! The MCP conversation: initialize, tools/list, every tool, per-user isolation, server/discover.

use serde_json::{Value, json};

use crate::support::{PROTOCOL, message, spawn};

#[tokio::test]
async fn initialize_list_and_every_tool() {
    let s = spawn().await;
    let mut c = s.client(&s.token("usr_alice", "todo:write"));
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "todo-mcp");
    assert_eq!(init["result"]["protocolVersion"], PROTOCOL);
    assert!(c.session.is_some(), "2025-11-25 uses sessions");

    let tools = c.rpc("tools/list", json!({})).await;
    let mut names: Vec<&str> =
        tools["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add_todo", "complete_todo", "delete_todo", "list_todos"]);

    // todo:write implies todo:read: the writer can list too.
    let empty = c.call("list_todos", json!({})).await;
    assert_eq!(empty["structuredContent"], json!({"todos": []}));

    let added = c.call("add_todo", json!({"title": "  buy milk "})).await;
    assert_eq!(added["isError"], false);
    let todo = &added["structuredContent"]["todo"];
    assert_eq!(todo["title"], "buy milk");
    assert_eq!(todo["done"], false);
    let id = todo["id"].as_i64().unwrap();
    c.call("add_todo", json!({"title": "write tests"})).await;

    let done = c.call("complete_todo", json!({"id": id})).await;
    assert_eq!(done["structuredContent"]["todo"]["done"], true);
    let open = c.call("list_todos", json!({})).await;
    let titles = |v: &Value| -> Vec<String> {
        v["structuredContent"]["todos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(titles(&open), ["write tests"]);
    let all = c.call("list_todos", json!({"include_done": true})).await;
    assert_eq!(titles(&all), ["buy milk", "write tests"]);

    let deleted = c.call("delete_todo", json!({"id": id})).await;
    assert_eq!(deleted["structuredContent"], json!({"deleted": id}));
    let all = c.call("list_todos", json!({"include_done": true})).await;
    assert_eq!(titles(&all), ["write tests"]);

    let bad = c.call("add_todo", json!({"title": "   "})).await;
    assert_eq!(bad["isError"], true);
}

#[tokio::test]
async fn users_only_see_their_own_todos() {
    let s = spawn().await;
    let mut alice = s.client(&s.token("usr_alice", "todo:write"));
    let mut bob = s.client(&s.token("usr_bob", "todo:write"));
    alice.initialize().await;
    bob.initialize().await;
    let id = alice.call("add_todo", json!({"title": "alice's secret"})).await["structuredContent"]["todo"]["id"]
        .as_i64()
        .unwrap();

    let bobs = bob.call("list_todos", json!({"include_done": true})).await;
    assert_eq!(bobs["structuredContent"], json!({"todos": []}));
    for tool in ["complete_todo", "delete_todo"] {
        let r = bob.call(tool, json!({"id": id})).await;
        assert_eq!(r["isError"], true, "{tool}");
        assert_eq!(r["content"][0]["text"], format!("you have no todo with id {id}"));
    }
    let alices = alice.call("list_todos", json!({})).await;
    assert_eq!(alices["structuredContent"]["todos"][0]["title"], "alice's secret");
    assert_eq!(alices["structuredContent"]["todos"][0]["done"], false);

    // Same user, new session (another token): same todos.
    let mut alice2 = s.client(&s.token("usr_alice", "todo:read"));
    alice2.initialize().await;
    let again = alice2.call("list_todos", json!({})).await;
    assert_eq!(again["structuredContent"]["todos"][0]["id"], id);
}

#[tokio::test]
async fn server_discover_and_unknown_methods_get_clean_json_rpc_answers() {
    let s = spawn().await;
    let c = s.client(&s.token("usr_alice", "todo:read"));

    // Newer clients probe server/discover before initializing (MCP 2026-07-28); rmcp answers
    // it with the server's metadata.
    let discover = json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": {"name":"probe","version":"1"},
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let r = c
        .request(&discover)
        .header("MCP-Protocol-Version", PROTOCOL)
        .header("Mcp-Method", "server/discover")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = message(r).await;
    assert_eq!(m["jsonrpc"], "2.0");
    assert_eq!(m["id"], 1);
    assert!(m["result"]["supportedVersions"].as_array().unwrap().iter().any(|v| v == PROTOCOL), "{m}");

    // A method nobody implements, inside a session: JSON-RPC "method not found".
    let mut c = s.client(&s.token("usr_alice", "todo:read"));
    c.initialize().await;
    let r = c.send("nonexistent/method", json!({})).await;
    assert_eq!(r.status(), 200);
    let m = message(r).await;
    assert_eq!(m["error"]["code"], -32601, "{m}");
    assert!(m.get("result").is_none());
}
