//! The tools: which route each one calls, and its input schema, built from that route's
//! parameters and body in the OpenAPI document, so that a tool asks for exactly what the
//! route takes and stays in step with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

/// How a tool turns its answer into a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The route's answer as it is.
    Plain,
    /// A message's attachments, each with the link that downloads it.
    Attachments,
}

/// One tool: a name for agents, and the route it calls.
#[derive(Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    /// What an agent should know beyond the route's own summary (which follows it).
    pub hint: &'static str,
    pub method: &'static str,
    /// The route, with `{…}` path parameters as the API names them.
    pub path: &'static str,
    /// API parameter name → tool argument name (`id` is ambiguous to an agent).
    pub rename: &'static [(&'static str, &'static str)],
    /// API parameters this tool does not offer.
    pub hide: &'static [&'static str],
    /// API parameters this tool sets when the caller does not (API name, value).
    pub defaults: &'static [(&'static str, &'static str)],
    pub read_only: bool,
    pub destructive: bool,
    pub shape: Shape,
}

const INBOX: &[(&str, &str)] = &[("id", "inbox_id")];
const MESSAGE: &[(&str, &str)] = &[("id", "inbox_id"), ("mid", "message_id")];

const fn tool(name: &'static str, method: &'static str, path: &'static str) -> ToolSpec {
    ToolSpec {
        name,
        title: "",
        hint: "",
        method,
        path,
        rename: &[],
        hide: &[],
        defaults: &[],
        read_only: true,
        destructive: false,
        shape: Shape::Plain,
    }
}

/// Every tool, in the order agents usually need them.
pub const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        title: "Account",
        hint: "The account's tier, limits and usage (account key).",
        ..tool("get_account", "GET", "/v1/account")
    },
    ToolSpec {
        title: "Capabilities",
        hint: "What this key may do at this tier, what it may not, and how to unlock it.",
        ..tool("get_capabilities", "GET", "/v1/capabilities")
    },
    ToolSpec {
        title: "Create inbox",
        hint: "With the account key: another inbox (address) in the account. The answer holds \
               the inbox key, shown only this once.",
        read_only: false,
        ..tool("create_inbox", "POST", "/v1/inboxes")
    },
    ToolSpec {
        title: "List inboxes",
        ..tool("list_inboxes", "GET", "/v1/inboxes")
    },
    ToolSpec {
        title: "Inbox",
        rename: INBOX,
        ..tool("get_inbox", "GET", "/v1/inboxes/{id}")
    },
    ToolSpec {
        title: "List or search messages",
        hint: "Search with the filters: from and subject (contains), unread, label, since, \
               mailbox. Newest first.",
        rename: INBOX,
        hide: &["wait"],
        ..tool("list_messages", "GET", "/v1/inboxes/{id}/messages")
    },
    ToolSpec {
        title: "Wait for a message",
        hint: "Waits up to timeout_s seconds (default 30, at most 60) for a message matching \
               the filters and answers as soon as one is stored; an empty list when none came. \
               Pass the newest id you have seen as `after` to wait for newer mail only.",
        rename: &[("id", "inbox_id"), ("wait", "timeout_s")],
        hide: &["offset"],
        defaults: &[("wait", "30")],
        ..tool("wait_for_message", "GET", "/v1/inboxes/{id}/messages")
    },
    ToolSpec {
        title: "Read a message",
        rename: MESSAGE,
        ..tool("get_message", "GET", "/v1/inboxes/{id}/messages/{mid}")
    },
    ToolSpec {
        title: "Attachments",
        hint: "A message's attachments (id, file name, type, size) and, for each, the \
               download_url that answers its bytes to a GET with this same key in \
               `Authorization: Bearer …`.",
        rename: MESSAGE,
        shape: Shape::Attachments,
        ..tool("list_attachments", "GET", "/v1/inboxes/{id}/messages/{mid}")
    },
    ToolSpec {
        title: "Send",
        hint: "Send an email from this inbox. `to`, `cc`, `bcc`: an address or a list.",
        rename: INBOX,
        read_only: false,
        ..tool("send_message", "POST", "/v1/inboxes/{id}/send")
    },
    ToolSpec {
        title: "Reply",
        hint: "Reply to the sender of a message, in its thread.",
        rename: MESSAGE,
        read_only: false,
        ..tool("reply", "POST", "/v1/inboxes/{id}/messages/{mid}/reply")
    },
    ToolSpec {
        title: "Reply to all",
        rename: MESSAGE,
        read_only: false,
        ..tool(
            "reply_all",
            "POST",
            "/v1/inboxes/{id}/messages/{mid}/reply-all",
        )
    },
    ToolSpec {
        title: "Forward",
        rename: MESSAGE,
        read_only: false,
        ..tool("forward", "POST", "/v1/inboxes/{id}/messages/{mid}/forward")
    },
    ToolSpec {
        title: "Mark, label or move a message",
        rename: MESSAGE,
        read_only: false,
        ..tool("update_message", "PATCH", "/v1/inboxes/{id}/messages/{mid}")
    },
    ToolSpec {
        title: "Delete a message",
        rename: MESSAGE,
        read_only: false,
        destructive: true,
        ..tool(
            "delete_message",
            "DELETE",
            "/v1/inboxes/{id}/messages/{mid}",
        )
    },
    ToolSpec {
        title: "List conversations",
        rename: INBOX,
        ..tool("list_threads", "GET", "/v1/inboxes/{id}/threads")
    },
    ToolSpec {
        title: "Read a conversation",
        rename: &[("id", "inbox_id"), ("tid", "thread_id")],
        ..tool("get_thread", "GET", "/v1/inboxes/{id}/threads/{tid}")
    },
    ToolSpec {
        title: "Upgrade link",
        hint: "A link for your operator to raise the account's tier; give it to them with the \
               answer's agent_script.",
        read_only: false,
        ..tool("create_upgrade_link", "POST", "/v1/upgrade-link")
    },
    ToolSpec {
        title: "Tell the operator",
        hint: "Leave a notice for your operator when you need a human (a decision, a payment, \
               a domain to verify); relay the answer's agent_script to them.",
        read_only: false,
        ..tool("notify_operator", "POST", "/v1/notify-operator")
    },
    ToolSpec {
        title: "List webhooks",
        ..tool("list_webhooks", "GET", "/v1/webhooks")
    },
    ToolSpec {
        title: "Create webhook",
        read_only: false,
        ..tool("create_webhook", "POST", "/v1/webhooks")
    },
];

/// Where each argument of a tool goes in the route's request.
#[derive(Debug, Clone)]
pub struct Binding {
    pub spec: &'static ToolSpec,
    /// (API name, argument name) of the path parameters.
    pub path_params: Vec<(String, String)>,
    /// (API name, argument name) of the query parameters.
    pub query_params: Vec<(String, String)>,
    /// Whether the route takes a JSON body: then the other arguments are its fields.
    pub has_body: bool,
}

/// The tools with their schemas, built once from the OpenAPI document.
#[derive(Debug)]
pub struct Catalogue {
    tools: Vec<Tool>,
    bindings: BTreeMap<&'static str, Binding>,
}

/// The catalogue could not be built: the OpenAPI document lacks a route a tool calls.
#[derive(Debug, thiserror::Error)]
#[error("tool {tool}: {method} {path} is not in the OpenAPI document")]
pub struct MissingRoute {
    pub tool: &'static str,
    pub method: &'static str,
    pub path: &'static str,
}

impl Catalogue {
    /// The catalogue for this build's API.
    pub fn new() -> Result<Catalogue, MissingRoute> {
        let doc = serde_json::to_value(mailroom_api::openapi_document()).unwrap_or_default();
        Catalogue::from_openapi(&doc)
    }

    /// The catalogue for the API `doc` describes.
    pub fn from_openapi(doc: &Value) -> Result<Catalogue, MissingRoute> {
        let mut tools = Vec::new();
        let mut bindings = BTreeMap::new();
        for spec in TOOLS {
            let (tool, binding) = build(doc, spec)?;
            tools.push(tool);
            bindings.insert(spec.name, binding);
        }
        Ok(Catalogue { tools, bindings })
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    pub fn binding(&self, name: &str) -> Option<&Binding> {
        self.bindings.get(name)
    }
}

fn argument_name(spec: &ToolSpec, api_name: &str) -> String {
    spec.rename
        .iter()
        .find(|(api, _)| *api == api_name)
        .map_or(api_name, |(_, arg)| arg)
        .to_owned()
}

/// One tool and its binding from its route's operation in `doc`.
fn build(doc: &Value, spec: &'static ToolSpec) -> Result<(Tool, Binding), MissingRoute> {
    let missing = || MissingRoute {
        tool: spec.name,
        method: spec.method,
        path: spec.path,
    };
    let op = doc
        .get("paths")
        .and_then(|p| p.get(spec.path))
        .and_then(|item| item.get(spec.method.to_ascii_lowercase()))
        .ok_or_else(missing)?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut binding = Binding {
        spec,
        path_params: Vec::new(),
        query_params: Vec::new(),
        has_body: false,
    };
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(place)) = (
            p.get("name").and_then(Value::as_str),
            p.get("in").and_then(Value::as_str),
        ) else {
            continue;
        };
        // Headers (Idempotency-Key) have a body field of their own (`client_id`).
        if !matches!(place, "path" | "query") || spec.hide.contains(&name) {
            continue;
        }
        let arg = argument_name(spec, name);
        let mut schema = p.get("schema").cloned().unwrap_or_else(|| json!({}));
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), p.get("description")) {
            obj.insert("description".into(), d.clone());
        }
        // A path parameter is one the path names; the document may call others "path" too.
        if spec.path.contains(&format!("{{{name}}}")) {
            required.push(Value::String(arg.clone()));
            binding.path_params.push((name.to_owned(), arg.clone()));
        } else {
            binding.query_params.push((name.to_owned(), arg.clone()));
        }
        properties.insert(arg, inline_refs(doc, &schema, 0));
    }
    if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
        binding.has_body = true;
        let body = inline_refs(doc, body, 0);
        if let Some(props) = body.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                properties.insert(k.clone(), v.clone());
            }
        }
        if let Some(req) = body.get("required").and_then(Value::as_array) {
            required.extend(req.iter().cloned());
        }
    }
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), Value::Array(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    let summary = op.get("summary").and_then(Value::as_str).unwrap_or("");
    let description = [spec.hint, summary]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" — ");
    let annotations = ToolAnnotations::with_title(spec.title)
        .read_only(spec.read_only)
        .destructive(spec.destructive)
        .open_world(false);
    let tool = Tool::new(spec.name, description, Arc::new(schema))
        .with_title(spec.title)
        .with_annotations(annotations);
    Ok((tool, binding))
}

/// `schema` with every `$ref` to `#/components/schemas/…` replaced by what it names: a tool's
/// schema must stand alone. The depth bound stops a schema that refers to itself.
fn inline_refs(doc: &Value, schema: &Value, depth: usize) -> Value {
    match schema {
        Value::Object(obj) => {
            if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
                let found = target
                    .strip_prefix('#')
                    .and_then(|pointer| doc.pointer(pointer))
                    .filter(|_| depth < 16);
                return match found {
                    Some(s) => inline_refs(doc, s, depth + 1),
                    None => json!({}),
                };
            }
            Value::Object(
                obj.iter()
                    .map(|(k, v)| (k.clone(), inline_refs(doc, v, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline_refs(doc, v, depth)).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_tool_finds_its_route_and_names_its_path_parameters() {
        let c = Catalogue::new().unwrap();
        assert_eq!(c.tools().len(), TOOLS.len());
        let send = c.tool("send_message").unwrap();
        let props = send.input_schema["properties"].as_object().unwrap();
        assert!(props.contains_key("inbox_id") && props.contains_key("subject"));
        assert!(!props.contains_key("id"));
        let required = send.input_schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("inbox_id")));
        // Recipients may be in any of to, cc and bcc: none is required on its own.
        assert!(!required.contains(&json!("cc")));
        // Attachments' items are inlined, not references into a document the client lacks.
        assert!(!send.input_schema_as_string().contains("$ref"));
        let wait = c.binding("wait_for_message").unwrap();
        assert!(
            wait.query_params
                .iter()
                .any(|(a, t)| a == "wait" && t == "timeout_s")
        );
        let list = c.tool("list_messages").unwrap();
        assert!(
            !list.input_schema["properties"]
                .as_object()
                .unwrap()
                .contains_key("wait")
        );
    }

    trait SchemaString {
        fn input_schema_as_string(&self) -> String;
    }

    impl SchemaString for Tool {
        fn input_schema_as_string(&self) -> String {
            serde_json::to_string(&*self.input_schema).unwrap()
        }
    }
}
