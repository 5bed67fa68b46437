//! What operators and user interfaces read without a credential: health,
//! readiness, metrics, the OpenAPI document and the problem types.

use super::*;

/// One kind of problem the gateway answers with.
#[derive(Serialize, ToSchema)]
pub(super) struct ProblemTypeInfo {
    /// As in a problem's `type`.
    #[serde(rename = "type")]
    kind: String,
    slug: ProblemType,
    /// What it means, in a sentence an agent can act on.
    hint: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProblemTypes {
    problem_types: Vec<ProblemTypeInfo>,
}

/// Every kind of problem the gateway answers with, and what each means:
/// user interfaces read them here instead of keeping a copy.
#[utoipa::path(
    get,
    path = "/v1/problem-types",
    tag = "operations",
    responses((status = 200, description = "The problem types", body = ProblemTypes))
)]
pub(super) async fn problem_types() -> Json<ProblemTypes> {
    Json(ProblemTypes {
        problem_types: ProblemType::ALL
            .iter()
            .map(|&kind| ProblemTypeInfo {
                kind: kind.urn(),
                slug: kind,
                hint: kind.hint(),
            })
            .collect(),
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct Status {
    #[schema(value_type = String)]
    status: &'static str,
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Status))
)]
pub(super) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the store is reachable.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    #[schema(value_type = String)]
    status: &'static str,
    /// `up` or `down`: whether the Redis shared with the other instances
    /// answers; `off` without `[cluster]`. Down, the instance stays ready:
    /// it serves alone (its own system token, its own events) until Redis
    /// returns, which beats taking every instance out of the balancer.
    #[schema(value_type = String)]
    cluster: &'static str,
}

/// Readiness: the store is reachable (and whether the instances reach
/// each other, which does not decide readiness).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\", \"cluster\": \"up\" | \"down\" | \"off\"}`", body = Readiness),
        (status = 503, description = "`not_ready`: the store is not reachable", body = ProblemBody, content_type = PROBLEM),
    )
)]
pub(super) async fn ready(State(g): State<Shared>) -> Response {
    if g.store.ping().await {
        let cluster = match (g.config.cluster.is_some(), g.cluster_up()) {
            (false, _) => "off",
            (true, true) => "up",
            (true, false) => "down",
        };
        Json(Readiness {
            status: "ready",
            cluster,
        })
        .into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::NotReady,
            "the store is not reachable",
        )
        .into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
pub(super) async fn metrics(State(g): State<Shared>) -> Response {
    let mut response = g.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(super) async fn openapi(State(g): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        g.openapi_document.get_or_init(|| document(&g).into()).clone(),
    )
        .into_response()
}

/// The document: the API as annotated, and each configured action as an
/// operation of its own, with its input and output. Built and encoded
/// once per gateway: it never changes while the process runs, and
/// building it per request let anyone spend the gateway's CPU.
fn document(g: &Gateway) -> Vec<u8> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let generic = |path: &str| doc["paths"][path]["post"].clone();
    let (agent_run, customer_run) = (
        generic("/v1/conversations/{id}/actions/{action}"),
        generic("/v1/sessions/{id}/actions/{action}"),
    );
    // By action name: an action of that name in any connection, each with
    // its connection's schema (a conversation's connection picks one).
    let mut by_name: std::collections::BTreeMap<&str, Vec<(&str, &company::config::ActionConfig)>> = Default::default();
    let mut connections: Vec<_> = g.connections.values().collect();
    connections.sort_by(|a, b| a.name().cmp(b.name()));
    for c in &connections {
        for a in &c.config.actions {
            by_name.entry(&a.name).or_default().push((c.name(), a));
        }
    }
    for (name, actions) in by_name {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for (connection, a) in &actions {
            let schema_name = format!("{connection}.{name}");
            let input = g.connections[*connection].input_schema(name).unwrap_or(Value::Null);
            let output = match &a.response {
                Some(fields) => json!({
                    "type": "object",
                    "properties": fields.keys().map(|f| (f.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
                }),
                None => json!({}),
            };
            doc["components"]["schemas"][format!("{schema_name}.input")] = input;
            doc["components"]["schemas"][format!("{schema_name}.output")] = output;
            inputs.push(json!({"$ref": format!("#/components/schemas/{schema_name}.input")}));
            outputs.push(json!({"$ref": format!("#/components/schemas/{schema_name}.output")}));
        }
        let one = |mut refs: Vec<Value>| {
            if refs.len() == 1 {
                refs.remove(0)
            } else {
                json!({ "oneOf": refs })
            }
        };
        let (input, output) = (one(inputs), one(outputs));
        let describe = |a: &company::config::ActionConfig, who: &str| {
            let kind = match a.kind {
                company::config::ActionKind::Read => "A read",
                company::config::ActionKind::Write => "A write: send an `Idempotency-Key`",
            };
            format!("{kind}, run {who}. {}", a.description.as_deref().unwrap_or(""))
        };
        let (_, first) = actions[0];
        let specific = |mut op: Value, id: String, who: &str| {
            op["operationId"] = json!(id);
            op["summary"] = json!(format!("{name}"));
            op["description"] = json!(describe(first, who));
            if let Some(params) = op["parameters"].as_array_mut() {
                params.retain(|p| p["name"] != "action");
            }
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {"input": input.clone()},
                }}},
            });
            if op["responses"]["200"]["content"]["application/json"].is_object() {
                op["responses"]["200"]["content"]["application/json"]["schema"] = json!({
                    "type": "object",
                    "properties": {
                        "data": output.clone(),
                        "meta": {"$ref": "#/components/schemas/ActionMeta"},
                    },
                    "required": ["data", "meta"],
                });
            }
            op
        };
        doc["paths"][format!("/v1/conversations/{{id}}/actions/{name}")] =
            json!({"post": specific(agent_run.clone(), format!("run_{name}"), "by an agent or bot in a conversation")});
        if actions
            .iter()
            .any(|(_, a)| a.callers.contains(&company::config::Caller::Customer))
        {
            doc["paths"][format!("/v1/sessions/{{id}}/actions/{name}")] = json!({"post": specific(customer_run.clone(), format!("run_{name}_as_customer"), "by the customer of a session")});
        }
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}
