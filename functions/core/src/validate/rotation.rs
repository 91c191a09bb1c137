//! The body of `POST /v2/integrations/{id}/rotate-secret`, optional:
//! `{"data": {"type": "secret-rotation", "secret_key": "...", "overlap_minutes": 1440}}`.

use super::*;

/// The longest overlap of a rotation: a week.
pub const MAX_OVERLAP_MINUTES: u32 = 10_080;

/// The overlap without `overlap_minutes`: a day.
pub const DEFAULT_OVERLAP_MINUTES: u32 = 1_440;

/// A rotation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationRequest {
    /// The new secret, or `None` for Herald to generate one.
    pub secret_key: Option<Secret>,
    /// How long the previous secret keeps signing, in minutes (0: it stops at once).
    pub overlap_minutes: u32,
}

impl Default for RotationRequest {
    fn default() -> Self {
        Self {
            secret_key: None,
            overlap_minutes: DEFAULT_OVERLAP_MINUTES,
        }
    }
}

/// Validates a rotation body; `Value::Null` (no body) and `{"data": null}` ask for
/// the defaults. Every problem is named with its pointer.
pub fn parse_rotation(body: &Value) -> Result<RotationRequest, Vec<FieldError>> {
    let mut request = RotationRequest::default();
    let data = match body {
        Value::Null => return Ok(request),
        Value::Object(top) => match top.get("data") {
            None | Some(Value::Null) => return Ok(request),
            Some(Value::Object(data)) => data,
            Some(_) => return Err(vec![FieldError::new("/data", "must be an object")]),
        },
        _ => {
            return Err(vec![FieldError::new(
                "",
                "the body must be a JSON object: {\"data\": {...}}, or empty",
            )])
        }
    };
    let mut errors = Vec::new();
    for key in data.keys() {
        if !["type", "secret_key", "overlap_minutes"].contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("/data/{}", escape_pointer(key)),
                "is not an attribute of a secret rotation (attributes: type, secret_key, overlap_minutes)",
            ));
        }
    }
    match data.get("type") {
        None => {}
        Some(Value::String(t)) if t == "secret-rotation" => {}
        Some(_) => errors.push(FieldError::new("/data/type", "must be \"secret-rotation\"")),
    }
    match data.get("secret_key") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => errors.push(FieldError::new(
            "/data/secret_key",
            "must not be empty; leave it out for Herald to generate one",
        )),
        Some(Value::String(s)) if s.chars().count() > MAX_SECRET => errors.push(FieldError::new(
            "/data/secret_key",
            format!("must be at most {MAX_SECRET} characters"),
        )),
        Some(Value::String(s)) if s.chars().any(char::is_control) => errors.push(FieldError::new(
            "/data/secret_key",
            "must not contain control characters",
        )),
        Some(Value::String(s)) => request.secret_key = Some(Secret::new(s.clone())),
        Some(_) => errors.push(FieldError::new("/data/secret_key", "must be a string")),
    }
    match data.get("overlap_minutes") {
        None | Some(Value::Null) => {}
        Some(v) => match v
            .as_u64()
            .filter(|m| *m <= u64::from(MAX_OVERLAP_MINUTES))
            .and_then(|m| u32::try_from(m).ok())
        {
            Some(m) => request.overlap_minutes = m,
            None => errors.push(FieldError::new(
                "/data/overlap_minutes",
                format!("must be a whole number of minutes from 0 to {MAX_OVERLAP_MINUTES} (default {DEFAULT_OVERLAP_MINUTES})"),
            )),
        },
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors)
    }
}
