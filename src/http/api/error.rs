//! The one error answer of the API, read and write alike: a status, a stable code for programs
//! (`error`), a sentence for people in the client's language (`message`), and for some codes the
//! field or the current state. Write refusals (`WriteError`) and the read API's reasons
//! (`Problem`) turn into it; only it turns into the JSON answer.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::i18n;
use crate::write::WriteError;

/// An error: `error` is a stable code for programs, `message` a sentence for people (German, or
/// English when Accept-Language prefers it).
#[derive(Serialize, ToSchema)]
pub struct ApiError {
    /// `unauthorized` (401), `forbidden` (403), `not_found` (404), `bad_request` (400),
    /// `payload_too_large` (413), `unsupported_media_type` (415), `invalid` (422),
    /// `idempotency_key_reused` (422), `conflict` (409), `idempotency_key_in_use` (409),
    /// `method_not_allowed` (405),
    /// `internal_error` (500).
    #[schema(example = "invalid")]
    error: &'static str,
    #[schema(example = "Bitte wählen Sie einen Betriebszustand: normal, limited, emergency oder unavailable.")]
    message: String,
    /// With `invalid`: the field (or header) that is unknown or whose value is not acceptable.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "level")]
    field: Option<String>,
    /// With `conflict`: what is stored now, with its `version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<Value>,
}

/// Why a request was not carried out, with its status, code and message key.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) key: &'static str,
    pub(crate) field: Option<String>,
    pub(crate) current: Option<Value>,
}

impl Fail {
    pub(crate) fn new(status: StatusCode, code: &'static str, key: &'static str) -> Fail {
        Fail { status, code, key, field: None, current: None }
    }
    pub(crate) fn bad_request(key: &'static str) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, "bad_request", key)
    }
    pub(crate) fn not_found(key: &'static str) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, "not_found", key)
    }
    pub(crate) fn forbidden() -> Fail {
        Fail::new(StatusCode::FORBIDDEN, "forbidden", "write.forbidden")
    }
    pub(crate) fn invalid(field: &str, key: &'static str) -> Fail {
        Fail { field: Some(field.to_string()), ..Fail::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", key) }
    }
    /// 409 with what is stored now (or, for a refused recovery step, every unmet condition).
    pub(crate) fn conflict(key: &'static str, current: Value) -> Fail {
        Fail { current: Some(current), ..Fail::new(StatusCode::CONFLICT, "conflict", key) }
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Fail {
        tracing::error!(error = %e, "write API failed");
        Fail::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "api.internal")
    }

    pub(crate) fn response(self, headers: &HeaderMap) -> Response {
        let lang = crate::http::api::message_lang(headers);
        let body =
            ApiError { error: self.code, message: i18n::t(lang, self.key), field: self.field, current: self.current };
        let mut res =
            (self.status, [(header::CACHE_CONTROL, "no-store"), (header::VARY, "accept-language")], Json(body))
                .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: no error code when no token was given, `invalid_token` when it was bad.
            let challenge = if self.key == "api.token_invalid" {
                r#"Bearer realm="notbetrieb", error="invalid_token""#
            } else {
                r#"Bearer realm="notbetrieb""#
            };
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        res
    }
}

impl From<WriteError> for Fail {
    fn from(e: WriteError) -> Fail {
        match e {
            WriteError::Forbidden => Fail::forbidden(),
            WriteError::NotFound(what) => Fail::not_found(match what {
                "municipality" => "api.no_such_municipality",
                "service" => "api.no_such_service",
                _ => "write.not_found",
            }),
            WriteError::Invalid { field, message } => Fail::invalid(&field, message),
            WriteError::VersionConflict { current } => Fail::conflict("write.conflict", current),
            e @ (WriteError::GateRefused { .. } | WriteError::Cycle { .. }) => {
                Fail::conflict("write.conflict", e.current().unwrap_or_default())
            }
            WriteError::Internal(e) => Fail::internal(e),
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::internal(e)
    }
}
