//! The read-only JSON API under /api/v1, documented by the OpenAPI document at /api/v1/openapi.json.

use axum::Router;

use crate::web::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
}
