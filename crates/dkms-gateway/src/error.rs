//! The one place where errors become HTTP answers: a stable code and a message a user can
//! act on. Internal detail goes to the log with the request id, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dkms_proto::ErrorCode;
use dkms_proto::api::Envelope;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds a client should wait before retrying (503 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }

    /// An internal failure: the detail is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the request id in the x-request-id header identifies it in the gateway log",
        )
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<dkms_store::StoreError> for ApiError {
    fn from(e: dkms_store::StoreError) -> Self {
        match e {
            dkms_store::StoreError::Conflict => {
                ApiError::new(ErrorCode::Conflict, "the record already exists")
            }
            dkms_store::StoreError::UnknownNode(tag) => {
                ApiError::new(ErrorCode::NodeNotFound, format!("unknown node tag {tag}"))
            }
            dkms_store::StoreError::GroupNotFound(g) => {
                ApiError::new(ErrorCode::GroupNotFound, format!("no node group named {g}"))
            }
            dkms_store::StoreError::PoliciesChanged => ApiError::new(
                ErrorCode::Conflict,
                "the stored policies changed meanwhile; send the request again",
            ),
            e @ dkms_store::StoreError::GroupInUse { .. } => {
                ApiError::new(ErrorCode::Conflict, e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            axum::Json(Envelope::<()>::err(self.code, self.message)),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        // For the audit log, which records each request's outcome by code.
        resp.extensions_mut().insert(self.code);
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
