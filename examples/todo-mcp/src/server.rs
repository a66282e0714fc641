//! The MCP server: four tools over the caller's own todos. The caller comes from the verified
//! access token (moat-guard's `Caller`), never from tool arguments.
//!
//! Scopes are enforced twice: by the moat-guard layer before the request reaches rmcp (so a
//! missing scope is a real HTTP 403 with a step-up challenge, MCP authorization spec "Scope
//! Challenge Handling"), and again here as defence in depth.

use moat_guard::rmcp::Caller;
use moat_guard::{Claims, ScopeHierarchy, ScopePolicy};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

use crate::store::{MAX_TITLE_CHARS, Owner, Store};

/// Read the caller's todos.
pub const READ: &str = "todo:read";
/// Change the caller's todos (implies [`READ`]).
pub const WRITE: &str = "todo:write";

/// `todo:write` implies `todo:read`.
pub fn scope_hierarchy() -> ScopeHierarchy {
    ScopeHierarchy::new().with_implication(WRITE, READ)
}

/// Which tool needs which scope.
pub fn scope_policy() -> ScopePolicy {
    ScopePolicy::new()
        .tool("list_todos", [READ])
        .tool("add_todo", [WRITE])
        .tool("complete_todo", [WRITE])
        .tool("delete_todo", [WRITE])
}

/// Arguments of `list_todos`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ListArgs {
    /// Include completed todos (default: false).
    #[serde(default)]
    pub include_done: bool,
}

/// Arguments of `add_todo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct AddArgs {
    /// What to do (1 to 500 characters).
    pub title: String,
}

/// Arguments of `complete_todo` and `delete_todo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct IdArgs {
    /// The todo's id, as returned by `list_todos` or `add_todo`.
    pub id: i64,
}

/// The MCP server. Built per session (or per request for stateless protocol versions) by
/// rmcp's service factory; all state is in the shared [`Store`].
#[derive(Clone)]
pub struct TodoServer {
    store: Store,
    tool_router: ToolRouter<Self>,
}

fn owner(claims: &Claims) -> Owner<'_> {
    Owner { iss: claims.iss(), sub: claims.sub() }
}

fn require(claims: &Claims, scope: &str) -> Result<(), ErrorData> {
    claims.require_scopes(&[scope]).map_err(|e| ErrorData::invalid_request(e.to_string(), None))
}

fn storage_error(e: sqlx::Error) -> ErrorData {
    tracing::error!(error = %e, "todo store failed");
    ErrorData::internal_error("storage error", None)
}

fn not_found(id: i64) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("you have no todo with id {id}"))])
}

#[tool_router]
impl TodoServer {
    /// A server over `store`.
    pub fn new(store: Store) -> Self {
        Self { store, tool_router: Self::tool_router() }
    }

    #[tool(description = "List your open todos (add include_done to see completed ones too). Needs todo:read.")]
    async fn list_todos(
        &self,
        Caller(claims): Caller,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        require(&claims, READ)?;
        let todos = self.store.list(owner(&claims), args.include_done).await.map_err(storage_error)?;
        Ok(CallToolResult::structured(json!({ "todos": todos })))
    }

    #[tool(description = "Add a todo to your list. Needs todo:write.")]
    async fn add_todo(
        &self,
        Caller(claims): Caller,
        Parameters(args): Parameters<AddArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        require(&claims, WRITE)?;
        let title = args.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "a title must have 1 to {MAX_TITLE_CHARS} characters"
            ))]));
        }
        let todo = self.store.add(owner(&claims), title).await.map_err(storage_error)?;
        Ok(CallToolResult::structured(json!({ "todo": todo })))
    }

    #[tool(description = "Mark one of your todos as done. Needs todo:write.")]
    async fn complete_todo(
        &self,
        Caller(claims): Caller,
        Parameters(args): Parameters<IdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        require(&claims, WRITE)?;
        match self.store.complete(owner(&claims), args.id).await.map_err(storage_error)? {
            Some(todo) => Ok(CallToolResult::structured(json!({ "todo": todo }))),
            None => Ok(not_found(args.id)),
        }
    }

    #[tool(description = "Delete one of your todos. Needs todo:write.")]
    async fn delete_todo(
        &self,
        Caller(claims): Caller,
        Parameters(args): Parameters<IdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        require(&claims, WRITE)?;
        if self.store.delete(owner(&claims), args.id).await.map_err(storage_error)? {
            Ok(CallToolResult::structured(json!({ "deleted": args.id })))
        } else {
            Ok(not_found(args.id))
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TodoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("todo-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "A personal todo list. list_todos needs todo:read; add_todo, complete_todo and \
                 delete_todo need todo:write.",
            )
    }
}
