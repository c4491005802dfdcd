//! WAS number and conversion nodes: NUMBER is the pack's INT-or-FLOAT type (Python `int` or
//! `float`), and conversions follow Python's `str()`, `int()` and `float()`.

use comfyrs::node::types::Image;
use comfyrs::node::{
    py_float_repr, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema,
    OutputSpec, Value,
};

const NUMBER_OPS: &str = "WAS Suite/Number/Operations";

/// A NUMBER input: an INT or a FLOAT (booleans count as ints, as in Python).
fn number(i: &Inputs, name: &str) -> Result<Value, NodeError> {
    match i.require(name)? {
        v @ (Value::Int(_) | Value::Float(_)) => Ok(v.clone()),
        Value::Bool(b) => Ok(Value::Int(*b as i128)),
        other => Err(NodeError::input(
            name,
            format!("expected a NUMBER (INT or FLOAT), got {}", other.kind()),
        )),
    }
}

fn value_error(message: String) -> NodeError {
    NodeError::Failed {
        message,
        exception_type: "ValueError".into(),
    }
}

/// Python's `int(str)`: optional sign, digits with single underscores between them,
/// surrounding whitespace.
fn py_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let digits = t.trim_start_matches(['+', '-']);
    if t.len() - digits.len() > 1
        || digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// Python's `float(str)`.
fn py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    let neg = lower.starts_with('-');
    match body {
        "inf" | "infinity" => Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        "nan" => Some(f64::NAN),
        _ if t.contains("__") || t.starts_with('_') || t.ends_with('_') => None,
        _ if !t
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE_".contains(c)) =>
        {
            None
        }
        _ => t.replace('_', "").parse().ok(),
    }
}

pub(crate) struct NumberToText;
impl Node for NumberToText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Number to Text")
            .category(NUMBER_OPS)
            .input(InputSpec::of("number", "NUMBER"))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let text = match number(i, "number")? {
            Value::Float(f) => py_float_repr(f),
            Value::Int(v) => v.to_string(),
            _ => unreachable!("number() gives INT or FLOAT"),
        };
        Ok(NodeOutput::one(Value::String(text)))
    }
}

pub(crate) struct TextToNumber;
impl Node for TextToNumber {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Text to Number")
            .category("WAS Suite/Text/Operations")
            .input(InputSpec::string("text").opt("forceInput", true))
            .output(OutputSpec::new("NUMBER"))
    }
    /// A text with a `.` is read as a float, any other as an int (Python's `float()` /
    /// `int()`; anything else is the pack's ValueError).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let text = i.string("text")?;
        let v = if text.contains('.') {
            Value::Float(py_float(text).ok_or_else(|| {
                value_error(format!("could not convert string to float: '{text}'"))
            })?)
        } else {
            Value::Int(py_int(text).ok_or_else(|| {
                value_error(format!("invalid literal for int() with base 10: '{text}'"))
            })?)
        };
        Ok(NodeOutput::one(v))
    }
}

pub(crate) struct NumberToInt;
impl Node for NumberToInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Number to Int")
            .category(NUMBER_OPS)
            .input(InputSpec::of("number", "NUMBER"))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let v = match number(i, "number")? {
            Value::Float(f) if !f.is_finite() => {
                return Err(NodeError::input(
                    "number",
                    format!("cannot convert {f} to an integer"),
                ))
            }
            Value::Float(f) => f.trunc() as i128,
            Value::Int(v) => v,
            _ => unreachable!("number() gives INT or FLOAT"),
        };
        Ok(NodeOutput::one(Value::Int(v)))
    }
}

pub(crate) struct NumberToFloat;
impl Node for NumberToFloat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Number to Float")
            .category(NUMBER_OPS)
            .input(InputSpec::of("number", "NUMBER"))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let v = match number(i, "number")? {
            Value::Float(f) => f,
            Value::Int(v) => v as f64,
            _ => unreachable!("number() gives INT or FLOAT"),
        };
        Ok(NodeOutput::one(Value::Float(v)))
    }
}

pub(crate) struct LogicBoolean;
impl Node for LogicBoolean {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Logic Boolean")
            .category("WAS Suite/Logic")
            .input(
                InputSpec::float("boolean")
                    .default(1)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("BOOLEAN"))
            .output(OutputSpec::new("NUMBER"))
            .output(OutputSpec::new("INT"))
            .output(OutputSpec::new("FLOAT"))
    }
    /// The value rounded half-to-even, as a boolean and as an int, and the value itself.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let f = i.float("boolean")?;
        if !f.is_finite() {
            return Err(NodeError::input("boolean", "must be a finite number"));
        }
        let r = f.round_ties_even() as i128;
        Ok(NodeOutput::values(vec![
            Value::Bool(r != 0),
            Value::Int(r),
            Value::Int(r),
            match i.require("boolean")? {
                Value::Int(v) => Value::Int(*v),
                _ => Value::Float(f),
            },
        ]))
    }
}

pub(crate) struct ImageSizeToNumber;
impl Node for ImageSizeToNumber {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Image Size to Number")
            .category(NUMBER_OPS)
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("NUMBER").named("width_num"))
            .output(OutputSpec::new("NUMBER").named("height_num"))
            .output(OutputSpec::new("FLOAT").named("width_float"))
            .output(OutputSpec::new("FLOAT").named("height_float"))
            .output(OutputSpec::new("INT").named("width_int"))
            .output(OutputSpec::new("INT").named("height_int"))
    }
    /// The size of the image as PIL sees the squeezed array: one image (a batch of one), so
    /// `[1, H, W, C]` gives W x H. A batch of several is an error, as in the pack.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let dims: Vec<usize> = image.0.dims().iter().copied().filter(|&d| d != 1).collect();
        let (w, h) = match dims.as_slice() {
            [h, w] => (*w, *h),
            [h, w, c] if (2..=4).contains(c) => (*w, *h),
            _ => {
                return Err(NodeError::Failed {
                    message: format!(
                        "Cannot handle this data type: an image of shape {:?} (one image expected)",
                        image.0.dims()
                    ),
                    exception_type: "TypeError".into(),
                })
            }
        };
        let (w, h) = (w as i128, h as i128);
        Ok(NodeOutput::values(vec![
            Value::Int(w),
            Value::Int(h),
            Value::Float(w as f64),
            Value::Float(h as f64),
            Value::Int(w),
            Value::Int(h),
        ]))
    }
}

pub(crate) struct FindAndReplace;
impl Node for FindAndReplace {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Text Find and Replace")
            .category("WAS Suite/Text/Search")
            .input(InputSpec::string("text").opt("forceInput", true))
            .input(InputSpec::string("find").default("").multiline(false))
            .input(InputSpec::string("replace").default("").multiline(false))
            .output(OutputSpec::new("STRING").named("result_text"))
            .output(OutputSpec::new("NUMBER").named("replacement_count_number"))
            .output(OutputSpec::new("FLOAT").named("replacement_count_float"))
            .output(OutputSpec::new("INT").named("replacement_count_int"))
    }
    /// `find` is a regular expression (Python's `re.subn`); the count is the number of
    /// replacements.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (text, find) = (i.string("text")?, i.string("find")?);
        let re = regex::Regex::new(find)
            .map_err(|e| NodeError::input("find", format!("invalid regular expression: {e}")))?;
        let count = re.find_iter(text).count() as i128;
        let replacement = comfyrs_pyexpr::re_replacement(i.string("replace")?);
        let out = re.replace_all(text, replacement.as_str()).into_owned();
        Ok(NodeOutput::values(vec![
            Value::String(out),
            Value::Int(count),
            Value::Float(count as f64),
            Value::Int(count),
        ]))
    }
}

fn zero_division(message: &str) -> NodeError {
    NodeError::Failed {
        message: message.into(),
        exception_type: "ZeroDivisionError".into(),
    }
}

/// Python's `a // b` and `a % b` on ints (floor rounding).
fn int_floor_div_mod(a: i128, b: i128) -> Result<(i128, i128), NodeError> {
    if b == 0 {
        return Err(zero_division("integer division or modulo by zero"));
    }
    let (q, r) = (a / b, a % b);
    Ok(if r != 0 && ((r < 0) != (b < 0)) {
        (q - 1, r + b)
    } else {
        (q, r)
    })
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => unreachable!("numbers only"),
    }
}

/// Python's `int()` of an int or float result.
fn py_int_of(v: &Value) -> Result<i128, NodeError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) if f.is_finite() => Ok(f.trunc() as i128),
        Value::Float(f) => Err(NodeError::Failed {
            message: format!("cannot convert float {} to integer", py_float_repr(*f)),
            exception_type: if f.is_nan() {
                "ValueError"
            } else {
                "OverflowError"
            }
            .into(),
        }),
        _ => unreachable!("numbers only"),
    }
}

const OPERATIONS: [&str; 13] = [
    "addition",
    "subtraction",
    "division",
    "floor division",
    "multiplication",
    "exponentiation",
    "modulus",
    "greater-than",
    "greater-than or equals",
    "less-than",
    "less-than or equals",
    "equals",
    "does not equal",
];

/// `a op b` with Python's number semantics (ints stay ints except under `/`).
fn operate(op: &str, a: &Value, b: &Value) -> Result<Value, NodeError> {
    let overflow = || NodeError::Failed {
        message: "integer result does not fit in 128 bits".into(),
        exception_type: "OverflowError".into(),
    };
    let ints = match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some((*x, *y)),
        _ => None,
    };
    let (x, y) = (as_f64(a), as_f64(b));
    let flag = |t: bool| Value::Int(t as i128);
    Ok(match op {
        "addition" => match ints {
            Some((p, q)) => Value::Int(p.checked_add(q).ok_or_else(overflow)?),
            None => Value::Float(x + y),
        },
        "subtraction" => match ints {
            Some((p, q)) => Value::Int(p.checked_sub(q).ok_or_else(overflow)?),
            None => Value::Float(x - y),
        },
        "multiplication" => match ints {
            Some((p, q)) => Value::Int(p.checked_mul(q).ok_or_else(overflow)?),
            None => Value::Float(x * y),
        },
        "division" => {
            if y == 0.0 {
                return Err(zero_division("division by zero"));
            }
            Value::Float(x / y)
        }
        "floor division" => match ints {
            Some((p, q)) => Value::Int(int_floor_div_mod(p, q)?.0),
            None => {
                if y == 0.0 {
                    return Err(zero_division("float floor division by zero"));
                }
                Value::Float((x / y).floor())
            }
        },
        "modulus" => match ints {
            Some((p, q)) => Value::Int(int_floor_div_mod(p, q)?.1),
            None => {
                if y == 0.0 {
                    return Err(zero_division("float modulo"));
                }
                let m = x % y;
                Value::Float(if m != 0.0 && ((m < 0.0) != (y < 0.0)) {
                    m + y
                } else {
                    m
                })
            }
        },
        "exponentiation" => match ints {
            Some((p, q)) if q >= 0 => Value::Int(
                p.checked_pow(u32::try_from(q).map_err(|_| overflow())?)
                    .ok_or_else(overflow)?,
            ),
            _ => {
                if x == 0.0 && y < 0.0 {
                    return Err(zero_division("0.0 cannot be raised to a negative power"));
                }
                let r = x.powf(y);
                if r.is_nan() && !x.is_nan() && !y.is_nan() {
                    return Err(NodeError::Failed {
                        message: "a negative number to a fractional power is complex".into(),
                        exception_type: "TypeError".into(),
                    });
                }
                Value::Float(r)
            }
        },
        "greater-than" => flag(x > y),
        "greater-than or equals" => flag(x >= y),
        "less-than" => flag(x < y),
        "less-than or equals" => flag(x <= y),
        "equals" => flag(match ints {
            Some((p, q)) => p == q,
            None => x == y,
        }),
        "does not equal" => flag(match ints {
            Some((p, q)) => p != q,
            None => x != y,
        }),
        // The pack logs an error and returns the first number.
        _ => a.clone(),
    })
}

pub(crate) struct NumberOperation;
impl Node for NumberOperation {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Number Operation")
            .category(NUMBER_OPS)
            .input(InputSpec::of("number_a", "NUMBER"))
            .input(InputSpec::of("number_b", "NUMBER"))
            .input(InputSpec::combo("operation", &OPERATIONS))
            .output(OutputSpec::new("NUMBER"))
            .output(OutputSpec::new("FLOAT"))
            .output(OutputSpec::new("INT"))
    }
    /// The result as NUMBER and on the FLOAT output as it is (an int stays an int, as in
    /// the pack), and `int()` of it.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (a, b) = (number(i, "number_a")?, number(i, "number_b")?);
        let r = operate(i.string("operation")?, &a, &b)?;
        let int = py_int_of(&r)?;
        Ok(NodeOutput::values(vec![r.clone(), r, Value::Int(int)]))
    }
}

pub(crate) struct StringToText;
impl Node for StringToText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("String to Text")
            .category("WAS Suite/Text/Operations")
            .input(InputSpec::string("string").always_options())
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::String(i.string("string")?.into())))
    }
}

const BIG: f64 = 18446744073709551615.0;

pub(crate) struct ConstantNumber;
impl Node for ConstantNumber {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Constant Number")
            .category("WAS Suite/Number")
            .input(InputSpec::combo(
                "number_type",
                &["integer", "float", "bool"],
            ))
            .input(
                InputSpec::float("number")
                    .default(0)
                    .min(-BIG)
                    .max(u64::MAX)
                    .step(0.01),
            )
            .input(
                InputSpec::string("number_as_text")
                    .opt("forceInput", true)
                    .optional(),
            )
            .output(OutputSpec::new("NUMBER"))
            .output(OutputSpec::new("FLOAT"))
            .output(OutputSpec::new("INT"))
    }
    /// The number (or `number_as_text` parsed as the chosen type, when connected and not
    /// empty) as NUMBER, FLOAT and INT; `bool` gives 1 above 0.5, else 0.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let kind = i.string("number_type")?;
        let mut number = match i.require("number")? {
            Value::Int(v) => Value::Int(*v),
            _ => Value::Float(i.float("number")?),
        };
        if let Some(Value::String(text)) = i.get("number_as_text") {
            if !text.is_empty() {
                number = match kind {
                    "integer" => Value::Int(py_int(text).ok_or_else(|| {
                        value_error(format!("invalid literal for int() with base 10: '{text}'"))
                    })?),
                    "float" => Value::Float(py_float(text).ok_or_else(|| {
                        value_error(format!("could not convert string to float: '{text}'"))
                    })?),
                    _ => Value::Int(1),
                };
            }
        }
        let (a, f, n) = match kind {
            "integer" => {
                let v = py_int_of(&number)?;
                (Value::Int(v), Value::Float(as_f64(&number)), Value::Int(v))
            }
            "float" => (
                Value::Float(as_f64(&number)),
                Value::Float(as_f64(&number)),
                Value::Int(py_int_of(&number)?),
            ),
            _ => {
                let b = (as_f64(&number) > 0.5) as i128;
                (Value::Int(b), Value::Float(b as f64), Value::Int(b))
            }
        };
        Ok(NodeOutput::values(vec![a, f, n]))
    }
}
