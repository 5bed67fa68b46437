//! What an action takes and gives: its typed input fields, checked before
//! the company is called; where each goes in the request (path, query,
//! body); and the masking of its answer for each audience.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ActionConfig, ActionKind, CustomerAuthConfig, CustomerAuthPlacement, Mask};

/// The type of an input field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
}

/// One input field as configured: `input.<name> = { type = …, … }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputField {
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default)]
    pub required: bool,
    /// Used when the caller leaves the field out.
    pub default: Option<Value>,
    /// Strings: a regular expression the whole value must match.
    pub pattern: Option<String>,
    /// Strings: at most this many characters.
    pub max_length: Option<usize>,
    /// Strings: one of these.
    #[serde(rename = "enum")]
    pub one_of: Option<Vec<String>>,
    /// Integers and numbers.
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    /// For people: shown by forms and in the OpenAPI document.
    pub description: Option<String>,
}

/// One field a caller got wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Input fields with their patterns compiled, checked once at load.
#[derive(Debug, Clone)]
pub struct InputSchema {
    fields: Vec<(String, InputField, Option<Regex>)>,
    /// Fields placed in the path: they may be neither empty nor a dot segment.
    in_path: Vec<String>,
}

impl InputSchema {
    pub fn new(action: &ActionConfig) -> Result<Self, String> {
        let fields = action
            .input
            .iter()
            .map(|(name, field)| {
                let pattern = match &field.pattern {
                    // Anchored: the whole value must match, not a part of it.
                    Some(p) => {
                        Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("input.{name}.pattern: {e}"))?)
                    }
                    None => None,
                };
                Ok((name.clone(), field.clone(), pattern))
            })
            .collect::<Result<_, String>>()?;
        let in_path = path_fields(&action.path).map(str::to_string).collect();
        Ok(Self { fields, in_path })
    }

    /// The caller's input checked against every rule, with defaults filled
    /// in; or one entry per field that is wrong (unknown fields included).
    pub fn check(&self, input: &Map<String, Value>) -> Result<Map<String, Value>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut checked = Map::new();
        for name in input.keys() {
            if !self.fields.iter().any(|(n, ..)| n == name) {
                errors.push(FieldError {
                    field: clip(name),
                    reason: "no such input field".into(),
                });
            }
        }
        for (name, field, pattern) in &self.fields {
            let value = match input.get(name).filter(|v| !v.is_null()) {
                Some(v) => v.clone(),
                None => match (&field.default, field.required) {
                    (Some(d), _) => d.clone(),
                    (None, true) => {
                        errors.push(FieldError {
                            field: name.clone(),
                            reason: "is required".into(),
                        });
                        continue;
                    }
                    (None, false) => continue,
                },
            };
            match check_value(field, pattern.as_ref(), &value) {
                Err(reason) => errors.push(FieldError {
                    field: name.clone(),
                    reason,
                }),
                Ok(()) if self.in_path.contains(name) && matches!(path_text(&value).as_str(), "" | "." | "..") => {
                    errors.push(FieldError {
                        field: name.clone(),
                        reason: "must not be empty, '.' or '..': it is a part of the path".into(),
                    })
                }
                Ok(()) => {
                    checked.insert(name.clone(), value);
                }
            }
        }
        if errors.is_empty() { Ok(checked) } else { Err(errors) }
    }

    /// The input's JSON Schema, for the OpenAPI document and forms.
    pub fn json_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, f, _) in &self.fields {
            let mut p = Map::new();
            p.insert("type".into(), serde_json::to_value(f.kind).unwrap_or(Value::Null));
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    p.insert(k.into(), v);
                }
            };
            // Anchored as it is checked: JSON Schema's own patterns are not.
            put("pattern", f.pattern.as_ref().map(|p| Value::from(format!("^(?:{p})$"))));
            put("maxLength", f.max_length.map(Value::from));
            put("enum", f.one_of.clone().map(Value::from));
            put("minimum", f.minimum.map(Value::from));
            put("maximum", f.maximum.map(Value::from));
            put("default", f.default.clone());
            put("description", f.description.clone().map(Value::from));
            if f.required && f.default.is_none() {
                required.push(Value::from(name.as_str()));
            }
            properties.insert(name.clone(), Value::Object(p));
        }
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
            "required": required,
        })
    }
}

/// A field name as echoed in an error: a caller's unknown name is cut
/// short, so an answer never grows with what was sent.
fn clip(name: &str) -> String {
    name.chars().take(64).collect()
}

fn check_value(field: &InputField, pattern: Option<&Regex>, value: &Value) -> Result<(), String> {
    match field.kind {
        FieldType::String => {
            let Some(s) = value.as_str() else {
                return Err("must be a string".into());
            };
            if let Some(max) = field.max_length
                && s.chars().count() > max
            {
                return Err(format!("must be at most {max} characters"));
            }
            if let Some(choices) = &field.one_of
                && !choices.iter().any(|c| c == s)
            {
                return Err(format!("must be one of: {}", choices.join(", ")));
            }
            if let Some(p) = pattern
                && !p.is_match(s)
            {
                return Err(format!(
                    "does not match the pattern {}",
                    field.pattern.as_deref().unwrap_or("")
                ));
            }
            Ok(())
        }
        FieldType::Integer | FieldType::Number => {
            let n = match field.kind {
                FieldType::Integer => value
                    .as_i64()
                    .map(|n| n as f64)
                    .ok_or("must be an integer (a JSON number without a fraction)")?,
                _ => value.as_f64().ok_or("must be a number")?,
            };
            if let Some(min) = field.minimum
                && n < min
            {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = field.maximum
                && n > max
            {
                return Err(format!("must be at most {max}"));
            }
            Ok(())
        }
        FieldType::Boolean => value
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| "must be true or false".into()),
    }
}

/// The names in an action path's `{field}` placeholders.
pub fn path_fields(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// A value as text in a path segment or query string.
fn path_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Everything but RFC 3986's unreserved characters is encoded, `/` too:
/// a value fills one path segment and can never add another.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The action's path with each `{field}` replaced by its checked value, percent-encoded.
pub fn fill_path(template: &str, input: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        let text = input.get(name).map(path_text).unwrap_or_default();
        out.extend(utf8_percent_encode(&text, SEGMENT));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The query string (without `?`) of the fields mapped to parameters; a
/// field the caller left out (and that has no default) is left out.
pub fn query_string(query: &BTreeMap<String, String>, input: &Map<String, Value>) -> Option<String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (param, field) in query {
        if let Some(v) = input.get(field) {
            q.append_pair(param, &path_text(v));
            any = true;
        }
    }
    any.then(|| q.finish())
}

/// The request body's fields placed at their JSON Pointers, as typed values.
pub fn fill_body(doc: &mut Value, body: &BTreeMap<String, String>, input: &Map<String, Value>) {
    for (pointer, field) in body {
        if let Some(v) = input.get(field) {
            crate::connector::set_pointer(doc, pointer, v.clone());
        }
    }
}

/// Who an answer is for; each may see it masked differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Agent,
    Customer,
    Bot,
    Logs,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Customer => "customer",
            Self::Bot => "bot",
            Self::Logs => "logs",
        }
    }
}

/// A value that was masked: where, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Masked {
    pub pointer: String,
    pub mask: Mask,
}

/// The masks that apply to `audience`: its own `redact_for` entry when it
/// has one, else `redact`.
pub fn masks_for(action: &ActionConfig, audience: Audience) -> &BTreeMap<String, Mask> {
    action.redact_for.get(&audience).unwrap_or(&action.redact)
}

/// Masks `doc` in place; returns each value masked, by its concrete pointer.
/// A pattern's `*` matches every element of an array (or member of an object).
pub fn apply_masks(doc: &mut Value, masks: &BTreeMap<String, Mask>) -> Vec<Masked> {
    let mut masked = Vec::new();
    for (pattern, mask) in masks {
        let tokens: Vec<String> = pattern
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        mask_at(doc, &tokens, String::new(), *mask, &mut masked);
    }
    masked.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    masked
}

fn mask_at(at: &mut Value, tokens: &[String], here: String, mask: Mask, out: &mut Vec<Masked>) {
    let Some((first, rest)) = tokens.split_first() else {
        if !at.is_null() {
            *at = mask.apply(at);
            out.push(Masked { pointer: here, mask });
        }
        return;
    };
    let escape = |t: &str| t.replace('~', "~0").replace('/', "~1");
    match at {
        Value::Array(items) if first == "*" => {
            for (i, item) in items.iter_mut().enumerate() {
                mask_at(item, rest, format!("{here}/{i}"), mask, out);
            }
        }
        Value::Array(items) => {
            if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                mask_at(item, rest, format!("{here}/{first}"), mask, out);
            }
        }
        Value::Object(members) if first == "*" => {
            for (key, item) in members.iter_mut() {
                mask_at(item, rest, format!("{here}/{}", escape(key)), mask, out);
            }
        }
        Value::Object(members) => {
            if let Some(item) = members.get_mut(first) {
                mask_at(item, rest, format!("{here}/{}", escape(first)), mask, out);
            }
        }
        _ => {}
    }
}

impl Mask {
    fn apply(self, value: &Value) -> Value {
        const DOTS: &str = "••••";
        match (self, value) {
            (Self::Last4, Value::String(s)) if s.chars().count() > 4 => {
                let tail: String = s.chars().skip(s.chars().count() - 4).collect();
                Value::String(format!("{DOTS}{tail}"))
            }
            (Self::Last4, Value::Number(n)) if n.to_string().len() > 4 => {
                let text = n.to_string();
                Value::String(format!("{DOTS}{}", &text[text.len() - 4..]))
            }
            _ => Value::String(DOTS.into()),
        }
    }
}

/// Whether a concrete pointer (as `Masked::pointer` gives it) is one a
/// pattern of `masks` covers: what a reveal may ask for.
pub fn covered(masks: &BTreeMap<String, Mask>, pointer: &str) -> bool {
    let concrete: Vec<&str> = pointer.split('/').skip(1).collect();
    masks.keys().any(|pattern| {
        let tokens: Vec<&str> = pattern.split('/').skip(1).collect();
        tokens.len() == concrete.len() && tokens.iter().zip(&concrete).all(|(t, c)| *t == "*" || t == c)
    })
}

/// Problems of one action's inputs, placements and masks (`config check`).
pub fn action_problems(a: &ActionConfig, customer_auth: &CustomerAuthConfig, fail: &mut dyn FnMut(String, String)) {
    for (name, field) in &a.input {
        if !crate::config::valid_name(name) {
            fail(
                format!("input.{name}"),
                "a field name is 1-64 letters, digits, '-' or '_'".into(),
            );
        }
        if let Some(p) = &field.pattern
            && let Err(e) = Regex::new(p)
        {
            fail(format!("input.{name}.pattern"), format!("does not compile: {e}"));
        }
        let for_strings = field.pattern.is_some() || field.max_length.is_some() || field.one_of.is_some();
        if for_strings && field.kind != FieldType::String {
            fail(
                format!("input.{name}"),
                "pattern, max_length and enum are for strings".into(),
            );
        }
        let for_numbers = field.minimum.is_some() || field.maximum.is_some();
        if for_numbers && !matches!(field.kind, FieldType::Integer | FieldType::Number) {
            fail(
                format!("input.{name}"),
                "minimum and maximum are for integers and numbers".into(),
            );
        }
        if let Some(d) = &field.default
            && let Err(reason) = check_value(
                field,
                field
                    .pattern
                    .as_deref()
                    .and_then(|p| Regex::new(&format!("^(?:{p})$")).ok())
                    .as_ref(),
                d,
            )
        {
            fail(format!("input.{name}.default"), format!("the default {reason}"));
        }
    }
    for name in path_fields(&a.path) {
        if !a.input.contains_key(name) {
            fail("path".into(), format!("{{{name}}} names no input field"));
        } else if !a.input[name].required && a.input[name].default.is_none() {
            fail(
                format!("input.{name}"),
                "a field in the path must be required or have a default".into(),
            );
        }
    }
    for (param, field) in &a.query {
        if !a.input.contains_key(field) {
            fail(format!("query.{param}"), format!("{field:?} names no input field"));
        }
    }
    for (pointer, field) in &a.body {
        if !a.input.contains_key(field) {
            fail(format!("body.{pointer}"), format!("{field:?} names no input field"));
        }
        if !pointer.starts_with('/') {
            fail(format!("body.{pointer}"), "a JSON Pointer starts with '/'".into());
        }
        if a.method == "GET" {
            fail(format!("body.{pointer}"), "a GET request has no body".into());
        }
        if customer_auth.placement == CustomerAuthPlacement::Body && overlaps(pointer, &customer_auth.pointer) {
            fail(
                format!("body.{pointer}"),
                format!("collides with the customer token's pointer {:?}", customer_auth.pointer),
            );
        }
    }
    let bodies: Vec<&String> = a.body.keys().collect();
    for (i, p) in bodies.iter().enumerate() {
        for q in &bodies[i + 1..] {
            if overlaps(p, q) {
                fail(format!("body.{q}"), format!("collides with {p:?}"));
            }
        }
    }
    if a.kind == ActionKind::Write {
        if a.method == "GET" {
            fail("method".into(), "a write cannot be a GET".into());
        }
        if a.cache_ttl_secs > 0 {
            fail("cache_ttl_secs".into(), "a write is never cached".into());
        }
    }
    let patterns = std::iter::once(&a.redact).chain(a.redact_for.values());
    for pointer in patterns.flat_map(BTreeMap::keys) {
        if !pointer.starts_with('/') {
            fail(format!("redact.{pointer}"), "a JSON Pointer starts with '/'".into());
        }
    }
}

/// Whether one pointer is the other or lies under it: setting both would
/// overwrite one with the other.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| long == short || long.starts_with(&format!("{short}/"));
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(toml_text: &str) -> ActionConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn transactions() -> ActionConfig {
        action(
            r#"
            name = "gettransactions"
            path = "/accounts/{account_id}/transactions"
            input.account_id = { type = "string", required = true, pattern = "acc-[0-9]{4}" }
            input.limit = { type = "integer", minimum = 1, maximum = 100, default = 20 }
            input.kind = { type = "string", enum = ["debit", "credit"] }
            input.amount = { type = "number", minimum = 0.5 }
            input.pending = { type = "boolean" }
            input.note = { type = "string", max_length = 3 }
            query = { limit = "limit", kind = "kind" }
            body = { "/page/size" = "limit", "/filter/pending" = "pending" }
            "#,
        )
    }

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn reasons(errors: Vec<FieldError>) -> Vec<(String, String)> {
        errors.into_iter().map(|e| (e.field, e.reason)).collect()
    }

    #[test]
    fn inputs_are_checked_field_by_field_with_defaults() {
        let schema = InputSchema::new(&transactions()).unwrap_or_else(|e| unreachable!("{e}"));
        let ok = schema.check(&input(json!({"account_id": "acc-0001"}))).ok();
        assert_eq!(ok, Some(input(json!({"account_id": "acc-0001", "limit": 20}))));
        let errors = schema
            .check(&input(json!({
                "account_id": "acc-0001x", "limit": 1.5, "kind": "both", "amount": 0.1,
                "pending": "yes", "note": "four", "extra": 1
            })))
            .err()
            .map(reasons)
            .unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["extra", "account_id", "amount", "kind", "limit", "note", "pending"]
        );
        assert!(errors[1].1.contains("pattern"), "{errors:?}");
        assert!(errors[4].1.contains("integer"), "{errors:?}");
        let missing = schema.check(&input(json!({"limit": 101}))).err().map(reasons);
        assert_eq!(
            missing,
            Some(vec![
                ("account_id".into(), "is required".into()),
                ("limit".into(), "must be at most 100".into())
            ])
        );
    }

    #[test]
    fn values_fill_one_path_segment_and_no_more() {
        let filled = fill_path(
            "/accounts/{account_id}/tx",
            &input(json!({"account_id": "a/../b c?d#%"})),
        );
        assert_eq!(filled, "/accounts/a%2F..%2Fb%20c%3Fd%23%25/tx");
        let schema = InputSchema::new(&action(
            r#"
            name = "a"
            path = "/x/{id}"
            input.id = { type = "string", required = true }
            "#,
        ))
        .unwrap_or_else(|e| unreachable!("{e}"));
        for bad in ["", ".", ".."] {
            assert!(schema.check(&input(json!({"id": bad}))).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn query_and_body_take_typed_values() {
        let a = transactions();
        let values = input(json!({"limit": 5, "pending": true, "kind": "a b&c"}));
        assert_eq!(query_string(&a.query, &values).as_deref(), Some("kind=a+b%26c&limit=5"));
        let mut doc = json!({"customer_auth": "t"});
        fill_body(&mut doc, &a.body, &values);
        assert_eq!(
            doc,
            json!({"customer_auth": "t", "page": {"size": 5}, "filter": {"pending": true}})
        );
        assert_eq!(query_string(&a.query, &Map::new()), None);
    }

    #[test]
    fn masks_cover_each_element_and_say_where() {
        let mut doc = json!({
            "email": "a@b.example",
            "accounts": [{"id": "acc-12345678"}, {"id": 123456789}, {"id": "abc"}, {"other": 1}],
        });
        let masks: BTreeMap<String, Mask> = [
            ("/accounts/*/id".to_string(), Mask::Last4),
            ("/email".to_string(), Mask::Hide),
        ]
        .into();
        let masked = apply_masks(&mut doc, &masks);
        assert_eq!(
            doc,
            json!({
                "email": "••••",
                "accounts": [{"id": "••••5678"}, {"id": "••••6789"}, {"id": "••••"}, {"other": 1}],
            })
        );
        let pointers: Vec<&str> = masked.iter().map(|m| m.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/accounts/0/id", "/accounts/1/id", "/accounts/2/id", "/email"]
        );
        assert!(covered(&masks, "/accounts/7/id"));
        assert!(!covered(&masks, "/accounts/7"));
        assert!(!covered(&masks, "/name"));
    }

    #[test]
    fn config_check_names_each_wrong_placement() {
        let a = action(
            r#"
            name = "a"
            method = "GET"
            kind = "write"
            path = "/x/{nope}/{opt}"
            input.opt = { type = "integer", pattern = "(" }
            input.s = { type = "string", default = 3 }
            query = { q = "missing" }
            body = { "/customer" = "s", "/customer/x" = "opt", "nopointer" = "s" }
            "#,
        );
        let customer = CustomerAuthConfig {
            placement: CustomerAuthPlacement::Body,
            pointer: "/customer/token".into(),
            ..CustomerAuthConfig::default()
        };
        let mut found = Vec::new();
        action_problems(&a, &customer, &mut |path, message| {
            found.push(format!("{path}: {message}"))
        });
        let text = found.join("\n");
        for expected in [
            "input.opt.pattern: does not compile",
            "input.opt: pattern, max_length and enum are for strings",
            "input.s.default: the default must be a string",
            "path: {nope} names no input field",
            "input.opt: a field in the path must be required",
            "query.q: \"missing\" names no input field",
            "body./customer: collides with the customer token's pointer",
            "body./customer/x: collides with \"/customer\"",
            "body.nopointer: a JSON Pointer starts with '/'",
            "body./customer: a GET request has no body",
            "method: a write cannot be a GET",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
    }
}
