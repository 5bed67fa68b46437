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
pub(super) async fn openapi() -> Response {
    // Built and encoded once: the document never changes while the process
    // runs, and building it per request let anyone spend the gateway's CPU.
    static DOCUMENT: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| serde_json::to_vec(&ApiDoc::openapi()).unwrap_or_default().into());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document.clone(),
    )
        .into_response()
}
