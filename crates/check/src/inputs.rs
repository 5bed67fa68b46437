//! What each action is called with: its input (from `--action-input`,
//! checked as the gateway checks it), and whether it runs at all (a write
//! only with `--allow-writes`; an action with a required input only when
//! that input is given).

use std::collections::HashMap;

use company::action::InputSchema;
use company::config::{ActionKind, ConnectionConfig};
use serde_json::{Map, Value};

use crate::CheckError;

/// `--action-input NAME=JSON`: the input fields of one action.
#[derive(Debug, Clone)]
pub struct ActionInput {
    pub action: String,
    pub input: Map<String, Value>,
}

impl ActionInput {
    /// `NAME=JSON`, split at the first `=`; the JSON must be an object.
    pub fn parse(text: &str) -> Result<Self, CheckError> {
        let (name, json) = text
            .split_once('=')
            .ok_or_else(|| CheckError::ActionInput(format!("{text:?} is not NAME=JSON")))?;
        let input = match serde_json::from_str(json) {
            Ok(Value::Object(input)) => input,
            Ok(_) => {
                return Err(CheckError::ActionInput(format!(
                    "{name}: the input is a JSON object of input fields, such as {{\"account_id\": \"acc-1001\"}}"
                )));
            }
            Err(e) => return Err(CheckError::ActionInput(format!("{name}: not JSON: {e}"))),
        };
        Ok(Self {
            action: name.trim().to_string(),
            input,
        })
    }
}

/// How one action is called in this run: with this checked input, or not
/// at all, for the reason given.
pub(crate) type Plan = Result<Map<String, Value>, String>;

pub(crate) const WRITE_SKIPPED: &str = "a write: run with --allow-writes";

/// Each action's plan, in the connection's order. A given input that names
/// no action, or that its action's schema refuses, is an error: the run
/// would not call the company the way the operator meant.
pub(crate) fn plans(
    conn: &ConnectionConfig,
    given: &[ActionInput],
    allow_writes: bool,
) -> Result<Vec<Plan>, CheckError> {
    let mut by_name: HashMap<&str, &Map<String, Value>> = HashMap::new();
    for g in given {
        if conn.action(&g.action).is_none() {
            return Err(CheckError::ActionInput(format!(
                "{}: connection {:?} has no such action",
                g.action, conn.name
            )));
        }
        if by_name.insert(g.action.as_str(), &g.input).is_some() {
            return Err(CheckError::ActionInput(format!("{}: given twice", g.action)));
        }
    }
    conn.actions
        .iter()
        .map(|action| {
            let schema =
                InputSchema::new(action).map_err(|e| CheckError::ActionInput(format!("{}: {e}", action.name)))?;
            let checked = match by_name.get(action.name.as_str()) {
                Some(input) => Ok(schema.check(input).map_err(|errors| {
                    let each: Vec<String> = errors.iter().map(|e| format!("{} {}", e.field, e.reason)).collect();
                    CheckError::ActionInput(format!("{}: {}", action.name, each.join("; ")))
                })?),
                None => schema.check(&Map::new()).map_err(|errors| {
                    let required: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                    format!(
                        "needs input ({}): give --action-input '{}={{…}}'",
                        required.join(", "),
                        action.name
                    )
                }),
            };
            Ok(match checked {
                _ if action.kind == ActionKind::Write && !allow_writes => Err(WRITE_SKIPPED.to_string()),
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> ConnectionConfig {
        toml::from_str(
            r#"
            name = "acme"
            base_url = "http://127.0.0.1:1"
            system_auth = { kind = "none" }
            identity = { mode = "opaque" }
            [[actions]]
            name = "getprofile"
            path = "/getprofile"
            [[actions]]
            name = "gettransactions"
            path = "/accounts/{account_id}/transactions"
            input.account_id = { type = "string", required = true, pattern = "acc-[0-9]{4}" }
            input.limit = { type = "integer", minimum = 1, maximum = 100, default = 20 }
            [[actions]]
            name = "blockcard"
            kind = "write"
            path = "/cards/{card_id}/block"
            input.card_id = { type = "string", required = true }
            "#,
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn input(text: &str) -> ActionInput {
        ActionInput::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn inputs_are_checked_and_writes_wait_for_allow_writes() {
        let conn = connection();
        let plans = plans(&conn, &[], false).unwrap_or_default();
        assert_eq!(plans[0], Ok(Map::new()));
        assert!(
            plans[1].as_ref().err().is_some_and(|e| e.contains("account_id")),
            "{plans:?}"
        );
        assert_eq!(plans[2], Err(WRITE_SKIPPED.to_string()));

        let given = [
            input(r#"gettransactions={"account_id": "acc-1001"}"#),
            input(r#"blockcard={"card_id": "card-1101"}"#),
        ];
        let plans = super::plans(&conn, &given, true).unwrap_or_default();
        assert_eq!(
            plans[1].as_ref().ok().and_then(|i| i.get("limit")),
            Some(&Value::from(20))
        );
        assert!(plans[2].is_ok());

        for bad in [
            r#"gettransactions={"account_id": "nope"}"#,
            r#"gettransactions={"account_id": "acc-1001", "extra": 1}"#,
            r#"nosuch={}"#,
        ] {
            assert!(super::plans(&conn, &[input(bad)], false).is_err(), "{bad}");
        }
        assert!(ActionInput::parse("gettransactions").is_err());
        assert!(ActionInput::parse("gettransactions=[1]").is_err());
        assert!(ActionInput::parse("gettransactions={").is_err());
    }
}
