//! What every route answers with: JSON bodies and the API server's
//! `Status` errors.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("static response parts")
}

/// A `Status` object of a failed request.
pub fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// A failed request, as the API server reports it: HTTP code, `reason`,
/// a message naming the object and the field, and `details` when they
/// say which object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422: the object is well formed but not acceptable.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn to_status(&self) -> Value {
        let mut s = status(self.code, self.reason, self.message.clone());
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub fn response(&self) -> Response<Body> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        full(code, self.to_status())
    }
}

/// A body answer with `Warning` headers (RFC 7234 form, code 299, as the
/// API server sends them; kubectl prints each as `Warning: ...`).
pub fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - {}", Value::String(w.clone()));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}
