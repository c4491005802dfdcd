//! The OpenAPI description of the serverless routes, generated from the same route tables
//! that build the router (each family's `api()`), so the document cannot list a route the
//! server lacks or miss one it has. Served at `GET /openapi.json`, with a plain HTML index
//! at `GET /docs`.

use crate::server::AppState;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `Authorization: Bearer <token>` (when tokens are configured).
    Bearer,
    /// `X-API-Key` (admin keys).
    AdminKey,
    Public,
}

/// One route: its method and path, what it does, and its handler.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: String,
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

impl ApiRoute {
    pub fn new(
        method: &'static str,
        path: impl Into<String>,
        tag: &'static str,
        summary: &'static str,
        handler: MethodRouter<AppState>,
    ) -> ApiRoute {
        ApiRoute {
            method,
            path: path.into(),
            summary,
            tag,
            access: Access::Bearer,
            handler,
        }
    }
    pub fn access(mut self, a: Access) -> ApiRoute {
        self.access = a;
        self
    }
}

/// The router of a route table.
pub fn router(routes: Vec<ApiRoute>) -> Router<AppState> {
    routes
        .into_iter()
        .fold(Router::new(), |r, a| r.route(&a.path, a.handler))
}

/// `{*rest}` and `{name}` path segments -> OpenAPI's `{name}`, plus the parameter names.
fn openapi_path(path: &str) -> (String, Vec<String>) {
    let mut params = Vec::new();
    let p = path
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let name = name.trim_start_matches('*').to_string();
                    params.push(name.clone());
                    format!("{{{name}}}")
                }
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/");
    (p, params)
}

/// The OpenAPI 3.1 document of `routes`, plus one concrete path per Model API pipeline with
/// its JSON Schema as the request body.
pub fn document(state: &AppState, routes: &[ApiRoute]) -> Value {
    let mut paths = Map::new();
    let error = json!({"$ref": "#/components/schemas/Error"});
    for r in routes {
        let (path, params) = openapi_path(&r.path);
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": format!("{}_{}", r.method.to_lowercase(),
                path.trim_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "4XX": {"description": "An error with a stable code", "content": {"application/json": {"schema": error}}},
            }
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(
                params
                    .iter()
                    .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
                    .collect(),
            );
        }
        if r.method == "POST" {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        match r.access {
            Access::Bearer => op["security"] = json!([{"bearer": []}]),
            Access::AdminKey => op["security"] = json!([{"adminKey": []}]),
            Access::Public => op["security"] = json!([]),
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    for p in super::models::PIPELINES {
        paths.insert(
            format!("/v1/models/{}", p.id),
            json!({"post": {
                "summary": format!("Run {} ({})", p.id, p.description),
                "tags": ["Model API"],
                "operationId": format!("run_{}", p.id.replace(['/', '.'], "_")),
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": p.json_schema(state)}}},
                "responses": {
                    "200": {"description": "Queued: request_id, status_url, result_url, cancel_url"},
                    "4XX": {"description": "An error with a stable code", "content": {"application/json": {"schema": error}}}
                }
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "comfyrs serverless APIs",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Deployments, Model API, ai-toolkit inference, LoRA catalog admin and the shared request routes (docs/serverless.md)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "adminKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable code"},
                    "message": {"type": "string"},
                    "details": {"type": "object"}
                }}
            }
        }
    })
}

/// `GET /openapi.json` and `GET /docs`.
pub fn api() -> Vec<super::openapi::ApiRoute> {
    vec![
        ApiRoute::new(
            "GET",
            "/openapi.json",
            "Docs",
            "This OpenAPI document",
            get(openapi_json),
        )
        .access(Access::Public),
        ApiRoute::new(
            "GET",
            "/docs",
            "Docs",
            "An HTML index of the routes",
            get(docs_page),
        )
        .access(Access::Public),
    ]
}

async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(document(&state, &super::all_routes())).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn docs_page(State(state): State<AppState>) -> Response {
    let doc = document(&state, &super::all_routes());
    let mut rows = String::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            rows.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
                method.to_uppercase(),
                escape(path),
                escape(op["tags"][0].as_str().unwrap_or("")),
                escape(op["summary"].as_str().unwrap_or(""))
            ));
        }
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>comfyrs serverless APIs</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 10px;border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>comfyrs serverless APIs</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> \
         (OpenAPI 3.1). Guide: docs/serverless.md.</p><table><tr><th>method</th><th>path</th><th>group</th><th>what</th></tr>\n{rows}</table></body></html>"
    ))
    .into_response()
}
