//! Route families. Each module's `routes()` is mounted at `/` and again under `/api`.

pub mod files;
pub mod info;
pub mod jobs;
pub mod prompt;

use super::error::ApiError;
use super::AppState;
use axum::response::IntoResponse;
use axum::Router;

/// ComfyUI's routes (everything but the `/api/jobs` family).
pub fn comfy_routes() -> Router<AppState> {
    Router::new()
        .merge(prompt::routes())
        .merge(info::routes())
        .merge(files::routes())
        .merge(super::pack_web::routes())
        .route("/ws", axum::routing::get(super::ws::handler))
}

/// Unknown routes: a clean JSON 404 (the frontend reads 404 as "feature absent").
pub async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
