//! A tool call as an API request, and the API's answer as a tool result.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

use crate::catalogue::{Binding, Shape};

/// The request a tool call makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    /// Path and query string, encoded.
    pub path_and_query: String,
    pub body: Option<Value>,
}

/// What the API answered.
#[derive(Debug, Clone)]
pub struct ApiAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The arguments do not fit the tool; said to the caller as a tool error.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgumentError {
    #[error("missing argument `{0}`")]
    Missing(String),
    #[error("argument `{0}` must be a string, number or boolean")]
    NotScalar(String),
    #[error("unknown argument `{0}`; list_tools shows this tool's arguments")]
    Unknown(String),
}

/// Builds the route's request from `args`: path parameters into the path, query parameters
/// into the query string, everything else into the JSON body (which the route checks).
pub fn request(binding: &Binding, args: &JsonObject) -> Result<ApiRequest, ArgumentError> {
    let mut args = args.clone();
    let mut path = binding.spec.path.to_owned();
    for (api, arg) in &binding.path_params {
        let value = args
            .remove(arg)
            .ok_or_else(|| ArgumentError::Missing(arg.clone()))?;
        let value = scalar(arg, &value)?.ok_or_else(|| ArgumentError::Missing(arg.clone()))?;
        path = path.replace(&format!("{{{api}}}"), &encode(&value));
    }
    let mut query = Vec::new();
    for (api, arg) in &binding.query_params {
        let given = match args.remove(arg) {
            Some(v) => scalar(arg, &v)?,
            None => None,
        };
        let default = binding
            .spec
            .defaults
            .iter()
            .find(|(d, _)| d == api)
            .map(|(_, v)| (*v).to_owned());
        if let Some(value) = given.or(default) {
            query.push(format!("{}={}", encode(api), encode(&value)));
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let body = if binding.has_body {
        Some(Value::Object(args.into_iter().collect()))
    } else if let Some(extra) = args.keys().next() {
        return Err(ArgumentError::Unknown(extra.clone()));
    } else {
        None
    };
    Ok(ApiRequest {
        method: binding.spec.method,
        path_and_query: path,
        body,
    })
}

/// A parameter's value as text; `None` for JSON `null` (the parameter is left out).
fn scalar(name: &str, v: &Value) -> Result<Option<String>, ArgumentError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(ArgumentError::NotScalar(name.to_owned())),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that a value can
/// never add a path segment or a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The tool result for the API's `answer`: a success as the API's envelope
/// (`{result, next_steps}`) in `structuredContent` and as text; an error with `isError`
/// and the API's error object (`error` code, `message`, `field`, `upgrade_context`, …)
/// plus its HTTP `status` and `next_steps`.
pub fn result(
    binding: &Binding,
    request: &ApiRequest,
    answer: ApiAnswer,
    base_url: &str,
) -> CallToolResult {
    let json: Option<Value> = answer
        .content_type
        .contains("json")
        .then(|| serde_json::from_slice(&answer.body).ok())
        .flatten();
    if !(200..300).contains(&answer.status) {
        let mut error = match json {
            Some(Value::Object(obj)) => obj,
            _ => {
                let mut obj = serde_json::Map::new();
                obj.insert("error".into(), json!("HTTP_ERROR"));
                obj.insert(
                    "message".into(),
                    json!(String::from_utf8_lossy(&answer.body)),
                );
                obj
            }
        };
        error.insert("status".into(), json!(answer.status));
        if !error.contains_key("next_steps") {
            error.insert("next_steps".into(), json!(error_next_steps(&error)));
        }
        return CallToolResult::structured_error(Value::Object(error));
    }
    match (json, binding.spec.shape) {
        (Some(v), Shape::Attachments) => {
            CallToolResult::structured(attachments(&v, &request.path_and_query, base_url))
        }
        (Some(v), Shape::Plain) => CallToolResult::structured(v),
        (None, _) => CallToolResult::success(vec![ContentBlock::text(
            String::from_utf8_lossy(&answer.body).into_owned(),
        )]),
    }
}

/// What an agent can do about an error, from what the error says: the API's error answer
/// carries the facts (`upgrade_context`, `retry_after`, `field`), this turns them into steps.
fn error_next_steps(error: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut steps = Vec::new();
    if let Some(script) = error
        .get("upgrade_context")
        .and_then(|u| u.get("agent_script"))
        .and_then(Value::as_str)
    {
        steps.push(script.to_owned());
    }
    if let Some(secs) = error.get("retry_after").and_then(Value::as_u64) {
        steps.push(format!("Retry in {secs} seconds"));
    }
    if let Some(field) = error.get("field").and_then(Value::as_str) {
        steps.push(format!("Correct `{field}` and call the tool again"));
    }
    match error.get("status").and_then(Value::as_u64) {
        Some(401) => steps.push(
            "Use a valid key: the Authorization header (or MAILROOM_API_KEY) is missing, \
             malformed, revoked or rotated"
                .to_owned(),
        ),
        Some(404) => steps.push(
            "Check the ids with list_inboxes or list_messages: this key reaches only its own \
             account's (or inbox's) mail"
                .to_owned(),
        ),
        Some(403) if steps.is_empty() => {
            steps.push("See what this key may do with get_capabilities".to_owned());
        }
        _ => {}
    }
    if steps.is_empty() {
        steps.push("The message says what went wrong; change the call accordingly".to_owned());
    }
    steps
}

/// The attachments of a message answer, each with its download link.
fn attachments(message: &Value, message_path: &str, base_url: &str) -> Value {
    let base = base_url.trim_end_matches('/');
    let list: Vec<Value> = message
        .pointer("/result/attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            let mut a = a.clone();
            let id = a.get("id").and_then(Value::as_str).map(encode);
            if let (Some(obj), Some(id)) = (a.as_object_mut(), id) {
                let url = format!("{base}{message_path}/attachments/{id}");
                obj.insert("download_url".into(), json!(url));
            }
            a
        })
        .collect();
    json!({
        "result": {"attachments": list},
        "next_steps": [
            "GET a download_url with this key in `Authorization: Bearer …` for the bytes",
        ],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::catalogue::Catalogue;

    fn args(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn arguments_land_in_path_query_and_body() {
        let c = Catalogue::new().unwrap();
        let r = request(
            c.binding("wait_for_message").unwrap(),
            &args(json!({"inbox_id": "inb_1/../x", "from": "a b&c", "timeout_s": 5})),
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.path_and_query,
            "/v1/inboxes/inb_1%2F..%2Fx/messages?from=a%20b%26c&wait=5"
        );
        assert_eq!(r.body, None);
        let r = request(
            c.binding("wait_for_message").unwrap(),
            &args(json!({"inbox_id": "i"})),
        )
        .unwrap();
        assert!(
            r.path_and_query.ends_with("?wait=30"),
            "{}",
            r.path_and_query
        );
        let r = request(
            c.binding("send_message").unwrap(),
            &args(json!({"inbox_id": "i", "to": "b@x.test", "subject": "s"})),
        )
        .unwrap();
        assert_eq!(r.path_and_query, "/v1/inboxes/i/send");
        assert_eq!(r.body, Some(json!({"to": "b@x.test", "subject": "s"})));
        assert_eq!(
            request(
                c.binding("get_message").unwrap(),
                &args(json!({"inbox_id": "i"}))
            ),
            Err(ArgumentError::Missing("message_id".into()))
        );
        assert_eq!(
            request(c.binding("get_account").unwrap(), &args(json!({"x": 1}))),
            Err(ArgumentError::Unknown("x".into()))
        );
    }
}
