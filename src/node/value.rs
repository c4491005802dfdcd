//! Values that flow along links: ComfyUI's primitive types plus opaque payloads (models, latents,
//! images...) that nodes downcast to their concrete Rust types.

use serde_json::Value as Json;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A heavy or structured value (MODEL, LATENT, IMAGE, CONDITIONING, ...). Implemented by the
/// types nodes pass to each other; the executor only needs its size (for cache accounting) and a
/// short description (for error reports).
pub trait Payload: Any + Send + Sync + fmt::Debug {
    /// Bytes this value keeps alive, counted against the output cache's byte budget.
    fn byte_size(&self) -> usize {
        0
    }
    /// A one-line description for `current_inputs` in error reports.
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// Type-erasure helper so `Arc<dyn Payload>` can be downcast to `Arc<T>`.
pub trait PayloadAny: Payload {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Payload> PayloadAny for T {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// One value on a link, or one literal input after validation converted it.
#[derive(Clone, Debug)]
pub enum Value {
    /// Python ints are unbounded; seeds go up to 2^64-1, so i128 holds every INT ComfyUI allows.
    Int(i128),
    Float(f64),
    String(String),
    Bool(bool),
    /// Any other literal (objects, nulls, lists given to `*` inputs).
    Json(Json),
    /// An output declared `is_list`, or an `input_is_list` node's whole input.
    List(Vec<Value>),
    Object(Arc<dyn PayloadAny>),
}

impl Value {
    pub fn object<T: Payload>(payload: T) -> Value {
        Value::Object(Arc::new(payload))
    }

    /// The payload as `Arc<T>`, if this value is one.
    pub fn downcast<T: Payload>(&self) -> Option<Arc<T>> {
        match self {
            Value::Object(p) => Arc::clone(p).into_any().downcast::<T>().ok(),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "INT",
            Value::Float(_) => "FLOAT",
            Value::String(_) => "STRING",
            Value::Bool(_) => "BOOLEAN",
            Value::Json(_) => "JSON",
            Value::List(_) => "list",
            Value::Object(_) => "object",
        }
    }

    /// Bytes kept alive by this value (for the cache budget).
    pub fn byte_size(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Json(j) => j.to_string().len(),
            Value::List(items) => items.iter().map(Value::byte_size).sum(),
            Value::Object(p) => p.byte_size(),
            _ => 8,
        }
    }

    /// The value as JSON where it has a JSON form (primitives, JSON, lists of those).
    pub fn to_json(&self) -> Option<Json> {
        Some(match self {
            Value::Int(i) => int_to_json(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::String(s) => Json::String(s.clone()),
            Value::Bool(b) => Json::Bool(*b),
            Value::Json(j) => j.clone(),
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|v| v.to_json())
                    .collect::<Option<Vec<_>>>()?,
            ),
            Value::Object(_) => return None,
        })
    }

    /// Whether `to_json()` would give exactly `json` (serde_json's equality: `7` and `7.0`
    /// differ). Checks primitives without allocating.
    pub fn json_form_is(&self, json: &Json) -> bool {
        match (self, json) {
            (Value::Int(i), _) => int_to_json(*i) == *json,
            (Value::Float(f), Json::Number(n)) => {
                n.is_f64() && n.as_f64().is_some_and(|x| x.to_bits() == f.to_bits())
            }
            (Value::Float(_), _) => false,
            (Value::String(s), Json::String(j)) => s == j,
            (Value::String(_), _) => false,
            (Value::Bool(b), Json::Bool(j)) => b == j,
            (Value::Bool(_), _) => false,
            (Value::Json(j), _) => j == json,
            (other, _) => other.to_json().is_some_and(|j| j == *json),
        }
    }

    /// How ComfyUI formats an input value in `execution_error.current_inputs`: primitives as
    /// they are, anything else as its `str()`.
    pub fn to_report_json(&self) -> Json {
        match self {
            Value::Object(p) => Json::String(p.describe()),
            other => other
                .to_json()
                .unwrap_or_else(|| Json::String(format!("{other:?}"))),
        }
    }

    /// Python's `str(value)` for primitives (what PreviewAny shows and STRING coercion gives).
    pub fn to_py_str(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => py_float_repr(*f),
            Value::String(s) => s.clone(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Json(j) => j.to_string(),
            Value::List(_) | Value::Object(_) => match self.to_json() {
                Some(j) => j.to_string(),
                None => match self {
                    Value::Object(p) => p.describe(),
                    _ => format!("{self:?}"),
                },
            },
        }
    }
}

pub(crate) fn int_to_json(i: i128) -> Json {
    if let Ok(v) = i64::try_from(i) {
        Json::from(v)
    } else if let Ok(v) = u64::try_from(i) {
        Json::from(v)
    } else {
        // Beyond 64 bits JSON numbers lose meaning for most clients: keep the digits.
        Json::String(i.to_string())
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` for integral values, exponent form
/// below 1e-4 and from 1e16 up.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits as d.ddde<exp>.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    let point = exp + 1; // digits before the decimal point
    let s = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123.456, "123.456"),
            (1.5e-7, "1.5e-07"),
            (9.223372036854776e18, "9.223372036854776e+18"),
        ] {
            assert_eq!(py_float_repr(f), s, "{f}");
        }
    }

    #[derive(Debug)]
    struct Blob(Vec<u8>);
    impl Payload for Blob {
        fn byte_size(&self) -> usize {
            self.0.len()
        }
    }

    #[test]
    fn payload_downcast_and_size() {
        let v = Value::object(Blob(vec![0; 10]));
        assert_eq!(v.byte_size(), 10);
        assert_eq!(v.downcast::<Blob>().unwrap().0.len(), 10);
        assert!(Value::Int(1).downcast::<Blob>().is_none());
    }
}
