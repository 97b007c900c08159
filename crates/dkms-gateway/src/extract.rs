//! Request extractors that answer bad input in the API envelope instead of axum's plain
//! text rejections.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body: requires `Content-Type: application/json`, a body under the size limit
/// and a document of the expected shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::invalid(if ct.is_empty() {
                "missing Content-Type: send the body as application/json".to_string()
            } else {
                format!("unsupported Content-Type {ct:?}: send the body as application/json")
            }));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid(format!(
                    "request body is too large (limit {} bytes)",
                    crate::MAX_BODY_BYTES
                ))
            } else {
                ApiError::invalid("could not read the request body")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that carries a secret (a private key, a password): like [`ApiJson`], but
/// the raw body is wiped after parsing, and parse errors never quote the input.
pub struct SecretJson<T>(pub T);

impl<S, T> FromRequest<S> for SecretJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return Err(ApiError::invalid(
                "send the body as application/json (Content-Type)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid("request body is too large")
            } else {
                ApiError::invalid("could not read the request body")
            }
        })?;
        let parsed = serde_json::from_slice::<T>(&bytes).map_err(|e| {
            // serde quotes string values in some messages; say only where it failed.
            match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    ApiError::invalid(format!(
                        "malformed JSON at line {} column {}",
                        e.line(),
                        e.column()
                    ))
                }
                _ => ApiError::invalid(format!(
                    "invalid request body at line {} column {}: check the field names and types",
                    e.line(),
                    e.column()
                )),
            }
        });
        if let Ok(mut owned) = bytes.try_into_mut() {
            zeroize::Zeroize::zeroize(owned.as_mut());
        }
        parsed.map(SecretJson)
    }
}

/// Parses a JSON document, describing what is wrong in terms of the request.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "request body is empty; expected a JSON object",
        ));
    }
    // serde would read a struct from a JSON array too; the API takes objects only.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(b'[' | b'"' | b'0'..=b'9' | b'-' | b't' | b'f' | b'n') => {
            return Err(ApiError::invalid(
                "invalid request body: expected a JSON object",
            ));
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::invalid(format!("malformed JSON: {inner}"))
            }
            _ if path.is_empty() || path == "." => {
                ApiError::invalid(format!("invalid request body: {inner}"))
            }
            _ => ApiError::invalid(format!("invalid field `{path}`: {inner}")),
        }
    })?;
    de.end()
        .map_err(|_| ApiError::invalid("malformed JSON: trailing characters after the document"))?;
    Ok(value)
}

/// Query parameters, with the same error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<T>(q)
            .map(ApiQuery)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }

    #[test]
    fn only_objects_of_the_right_shape_parse() {
        assert!(parse_json::<Body>(br#"{"name":"x"}"#).is_ok());
        assert!(parse_json::<Body>(br#"  {"name":"x"}  "#).is_ok());
        for bad in [
            &br#"["x"]"#[..],
            br#""x""#,
            b"12",
            b"null",
            b"true",
            b"",
            br#"{"name":"x"} {}"#,
            br#"{"name":"#,
            br#"{"name":7}"#,
        ] {
            let e = parse_json::<Body>(bad).unwrap_err();
            assert_eq!(e.code, dkms_proto::ErrorCode::InvalidParameter, "{bad:?}");
        }
        let e = parse_json::<Body>(br#"{"name":7}"#).unwrap_err();
        assert!(e.message.contains("name"), "{}", e.message);
    }
}
