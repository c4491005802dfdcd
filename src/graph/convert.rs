//! Literal conversion exactly as ComfyUI's validation does it: Python's `int()`, `float()`,
//! `str()` and `bool()` applied to the JSON value.

use crate::node::{py_float_repr, Primitive, Value};
use serde_json::Value as Json;

/// Python's name for the JSON value's type, for conversion error messages.
fn py_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "NoneType",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "int",
        Json::String(_) => "str",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

/// Python's `str()` of a JSON value.
pub fn py_str(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Number(n) => match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
            Some(i) => i.to_string(),
            None => py_float_repr(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => s.clone(),
        Json::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Json::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Json::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr()` of a JSON value (strings single-quoted).
pub fn py_repr(v: &Json) -> String {
    match v {
        Json::String(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
        other => py_str(other),
    }
}

/// Python's `repr()` of a list of strings: `['a', 'b']`.
pub fn py_list_repr(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| py_repr(&Json::String(s.clone())))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn json_to_int(v: &Json) -> Result<i128, String> {
    match v {
        Json::Bool(b) => Ok(*b as i128),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i as i128)
            } else if let Some(u) = n.as_u64() {
                Ok(u as i128)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_nan() {
                    Err("cannot convert float NaN to integer".into())
                } else if f.is_infinite() {
                    Err("cannot convert float infinity to integer".into())
                } else {
                    Ok(f.trunc() as i128)
                }
            }
        }
        Json::String(s) => {
            let t = s.trim().replace('_', "");
            t.parse::<i128>()
                .map_err(|_| format!("invalid literal for int() with base 10: {}", py_repr(v)))
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type(other)
        )),
    }
}

fn json_to_float(v: &Json) -> Result<f64, String> {
    match v {
        Json::Bool(b) => Ok(*b as i32 as f64),
        Json::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => {
            let t = s.trim().to_ascii_lowercase();
            match t.as_str() {
                "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Ok(f64::NAN),
                _ => t
                    .replace('_', "")
                    .parse::<f64>()
                    .map_err(|_| format!("could not convert string to float: {}", py_repr(v))),
            }
        }
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            py_type(other)
        )),
    }
}

fn json_to_bool(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// A JSON literal as a [`Value`] without conversion (for `*` and combo inputs).
pub fn json_to_value(v: &Json) -> Value {
    match v {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i as i128)
            } else if let Some(u) = n.as_u64() {
                Value::Int(u as i128)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::String(s.clone()),
        other => Value::Json(other.clone()),
    }
}

/// Converts a literal for an input of the given primitive kind. `Err` carries Python's
/// exception message.
pub fn convert(kind: Primitive, v: &Json) -> Result<Value, String> {
    Ok(match kind {
        Primitive::Int => Value::Int(json_to_int(v)?),
        Primitive::Float => Value::Float(json_to_float(v)?),
        Primitive::String => Value::String(py_str(v)),
        Primitive::Bool => Value::Bool(json_to_bool(v)),
        Primitive::Combo | Primitive::Any => json_to_value(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_conversions() {
        assert!(matches!(
            convert(Primitive::Int, &json!(7.9)),
            Ok(Value::Int(7))
        ));
        assert!(matches!(
            convert(Primitive::Int, &json!(" 42 ")),
            Ok(Value::Int(42))
        ));
        assert_eq!(
            convert(Primitive::Int, &json!("7.5")).unwrap_err(),
            "invalid literal for int() with base 10: '7.5'"
        );
        assert!(matches!(
            convert(Primitive::Bool, &json!("false")),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            convert(Primitive::Bool, &json!("")),
            Ok(Value::Bool(false))
        ));
        assert!(
            matches!(convert(Primitive::String, &json!(1.0)), Ok(Value::String(s)) if s == "1.0")
        );
        assert!(
            matches!(convert(Primitive::String, &json!(true)), Ok(Value::String(s)) if s == "True")
        );
        assert!(
            matches!(convert(Primitive::Float, &json!("1e3")), Ok(Value::Float(f)) if f == 1000.0)
        );
        assert!(matches!(
            convert(Primitive::Int, &json!(18446744073709551615u64)),
            Ok(Value::Int(i)) if i == u64::MAX as i128
        ));
        assert_eq!(
            py_list_repr(&["a.safetensors".into(), "b".into()]),
            "['a.safetensors', 'b']"
        );
    }
}
