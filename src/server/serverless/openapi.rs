//! The OpenAPI description of the serverless routes, generated from the same route tables
//! that build the router (each family's `api()`), so the document cannot list a route the
//! server lacks or miss one it has. Each route names the schemas of its request and response
//! bodies, which its family declares next to its handlers ([`super::schemas`]). Served at
//! `GET /openapi.json`, with a plain HTML index at `GET /docs` (their handlers live where
//! every family is known, in [`super`]: this module imports no family).

use super::schemas::{reference, Named};
use crate::server::AppState;
use axum::routing::MethodRouter;
use axum::Router;
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

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// Not declared yet (the document says "an object"; a test keeps this unused).
    Undeclared,
    /// JSON following the named schema, with this status.
    Json(u16, &'static str),
    /// A file's bytes (its own content type).
    File,
    /// An HTML page.
    Html,
}

/// A query parameter.
pub struct QueryParam {
    pub name: &'static str,
    pub schema: Value,
    pub description: &'static str,
}

/// One route: its method and path, what it does, its bodies, and its handler.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: String,
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    /// The named schema of the JSON request body, if it takes one.
    pub body: Option<&'static str>,
    pub returns: Returns,
    pub query: Vec<QueryParam>,
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
            body: None,
            returns: Returns::Undeclared,
            query: Vec::new(),
            handler,
        }
    }
    pub fn access(mut self, a: Access) -> ApiRoute {
        self.access = a;
        self
    }
    /// The request body follows the named schema.
    pub fn body(mut self, schema: &'static str) -> ApiRoute {
        self.body = Some(schema);
        self
    }
    /// A 200 answer following the named schema.
    pub fn returns(self, schema: &'static str) -> ApiRoute {
        self.returns_status(200, schema)
    }
    pub fn returns_status(mut self, status: u16, schema: &'static str) -> ApiRoute {
        self.returns = Returns::Json(status, schema);
        self
    }
    pub fn returns_file(mut self) -> ApiRoute {
        self.returns = Returns::File;
        self
    }
    pub fn returns_html(mut self) -> ApiRoute {
        self.returns = Returns::Html;
        self
    }
    pub fn query(
        mut self,
        name: &'static str,
        schema: Value,
        description: &'static str,
    ) -> ApiRoute {
        self.query.push(QueryParam {
            name,
            schema,
            description,
        });
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

/// The OpenAPI 3.1 document of `routes` (their bodies from `schemas`), plus `extra_paths`
/// (the Model API's one concrete path per pipeline).
pub fn document(
    routes: &[ApiRoute],
    schemas: Vec<Named>,
    extra_paths: Map<String, Value>,
) -> Value {
    let mut paths = Map::new();
    let error = reference("Error");
    let json_content = |schema: Value| json!({"application/json": {"schema": schema}});
    for r in routes {
        let (path, params) = openapi_path(&r.path);
        let ok = match r.returns {
            Returns::Undeclared => (
                200,
                json!({"description": "OK", "content": json_content(json!({"type": "object"}))}),
            ),
            Returns::Json(status, name) => (
                status,
                json!({"description": name, "content": json_content(reference(name))}),
            ),
            Returns::File => (
                200,
                json!({"description": "The file", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
            ),
            Returns::Html => (
                200,
                json!({"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}),
            ),
        };
        let mut responses = Map::new();
        responses.insert(ok.0.to_string(), ok.1);
        responses.insert(
            "4XX".into(),
            json!({"description": "An error with a stable code", "content": json_content(error.clone())}),
        );
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": format!("{}_{}", r.method.to_lowercase(),
                path.trim_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
        });
        let mut parameters: Vec<Value> = params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(r.query.iter().map(|q| {
            json!({"name": q.name, "in": "query", "required": false, "schema": q.schema,
                   "description": q.description})
        }));
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({"required": true, "content": json_content(reference(body))});
        }
        match r.access {
            Access::Bearer => op["security"] = json!([{"bearer": []}]),
            Access::AdminKey => op["security"] = json!([{"adminKey": []}]),
            Access::Public => op["security"] = json!([]),
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    paths.extend(extra_paths);
    let components: Map<String, Value> = schemas
        .into_iter()
        .map(|(name, s)| (name.to_string(), s))
        .collect();
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
            "schemas": components,
        }
    })
}

/// The schemas of the document routes.
pub fn schemas() -> Vec<Named> {
    use super::schemas::*;
    vec![(
        "OpenApiDocument",
        open_object(
            &["openapi", "info", "paths", "components"],
            vec![
                ("openapi", string()),
                ("info", open_object(&["title", "version"], vec![])),
                ("paths", map_of(json!({"type": "object"}))),
                ("components", json!({"type": "object"})),
            ],
        ),
    )]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML index of a document's routes (`GET /docs`).
pub fn docs_html(doc: &Value) -> String {
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
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>comfyrs serverless APIs</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 10px;border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>comfyrs serverless APIs</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> \
         (OpenAPI 3.1). Guide: docs/serverless.md.</p><table><tr><th>method</th><th>path</th><th>group</th><th>what</th></tr>\n{rows}</table></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route declares its answer, and every schema it names exists (once).
    #[test]
    fn every_route_names_declared_schemas() {
        let schemas = super::super::all_schemas();
        let names: Vec<&str> = schemas.iter().map(|(n, _)| *n).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a schema name is declared twice");
        for r in super::super::all_routes() {
            let what = format!("{} {}", r.method, r.path);
            assert_ne!(r.returns, Returns::Undeclared, "{what}");
            if let Returns::Json(_, n) = r.returns {
                assert!(names.contains(&n), "{what}: no schema {n}");
            }
            if let Some(b) = r.body {
                assert!(names.contains(&b), "{what}: no schema {b}");
            }
        }
        // References inside the schemas resolve too.
        let text =
            serde_json::to_string(&schemas.iter().map(|(_, s)| s).collect::<Vec<_>>()).unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(names.contains(&name), "dangling reference to {name}");
        }
    }
}
