//! Binary operations and conditions of evanspearman's ComfyMath, re-implemented from their
//! schemas and observed behaviour (none of the pack's code is used), with Python's number
//! semantics: floor division and modulo round toward negative infinity, `/` on floats follows
//! IEEE except that division by zero is an error (Python's ZeroDivisionError), ints are
//! unbounded (here: i128, an overflow is an error).

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyMath";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(FloatBinaryOperation)?;
    p.register(IntBinaryOperation)?;
    p.register(NumberBinaryOperation)?;
    p.register(IntToNumber)?;
    p.register(FloatToNumber)?;
    p.register(NumberToInt)?;
    p.register(NumberToFloat)?;
    p.register(FloatToInt)?;
    p.register(IntToFloat)?;
    p.register(SdxlResolution)?;
    p.register(NearestSdxlResolution)?;
    Ok(())
}

const FLOAT_OPS: [&str; 11] = [
    "Add", "Sub", "Mul", "Div", "Mod", "Pow", "FloorDiv", "Max", "Min", "Log", "Atan2",
];
const INT_OPS: [&str; 16] = [
    "Add", "Sub", "Mul", "Div", "Mod", "Pow", "And", "Nand", "Or", "Nor", "Xor", "Xnor", "Shl",
    "Shr", "Max", "Min",
];

fn zero_div(what: &str) -> NodeError {
    NodeError::Failed {
        message: what.to_string(),
        exception_type: "ZeroDivisionError".into(),
    }
}

/// Python's float `a % b` (the result takes the sign of `b`).
fn py_fmod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((m < 0.0) != (b < 0.0)) {
        m + b
    } else if m == 0.0 {
        0.0f64.copysign(b)
    } else {
        m
    }
}

/// ComfyMath's float operation `op` on `a` and `b`, as Python evaluates it.
pub fn float_op(op: &str, a: f64, b: f64) -> Result<f64, NodeError> {
    Ok(match op {
        "Add" => a + b,
        "Sub" => a - b,
        "Mul" => a * b,
        "Div" => {
            if b == 0.0 {
                return Err(zero_div("float division by zero"));
            }
            a / b
        }
        "Mod" => {
            if b == 0.0 {
                return Err(zero_div("float modulo"));
            }
            py_fmod(a, b)
        }
        "Pow" => {
            if a == 0.0 && b < 0.0 {
                return Err(zero_div("0.0 cannot be raised to a negative power"));
            }
            let r = a.powf(b);
            if r.is_nan() && !a.is_nan() && !b.is_nan() {
                return Err(NodeError::input("a", "a negative number cannot be raised to a fractional power (Python gives a complex number)"));
            }
            r
        }
        "FloorDiv" => {
            if b == 0.0 {
                return Err(zero_div("float floor division by zero"));
            }
            ((a - py_fmod(a, b)) / b).round()
        }
        "Max" => {
            if b > a {
                b
            } else {
                a
            }
        }
        "Min" => {
            if b < a {
                b
            } else {
                a
            }
        }
        "Log" => {
            if a <= 0.0 || b <= 0.0 {
                return Err(NodeError::Failed {
                    message: "math domain error".into(),
                    exception_type: "ValueError".into(),
                });
            }
            if b == 1.0 {
                return Err(zero_div("float division by zero"));
            }
            a.ln() / b.ln()
        }
        "Atan2" => a.atan2(b),
        other => {
            return Err(NodeError::input(
                "op",
                format!(
                    "unknown operation '{other}'; allowed: {}",
                    FLOAT_OPS.join(", ")
                ),
            ))
        }
    })
}

fn overflow() -> NodeError {
    NodeError::Failed {
        message: "integer result does not fit in 128 bits".into(),
        exception_type: "OverflowError".into(),
    }
}

/// ComfyMath's int operation `op` on `a` and `b`, as Python evaluates it (including the
/// pack's own definitions: `Nand` and `Nor` are `~a & b`, `Xnor` is `~a ^ b`).
pub fn int_op(op: &str, a: i128, b: i128) -> Result<i128, NodeError> {
    Ok(match op {
        "Add" => a.checked_add(b).ok_or_else(overflow)?,
        "Sub" => a.checked_sub(b).ok_or_else(overflow)?,
        "Mul" => a.checked_mul(b).ok_or_else(overflow)?,
        "Div" | "Mod" => {
            if b == 0 {
                return Err(zero_div("integer division or modulo by zero"));
            }
            let q = a.div_euclid(b);
            let r = a.rem_euclid(b);
            // Python floors: with a negative divisor the remainder takes b's sign.
            let (q, r) = if b < 0 && r != 0 {
                (q + 1, r + b)
            } else {
                (q, r)
            };
            if op == "Div" {
                q
            } else {
                r
            }
        }
        "Pow" => {
            if b < 0 {
                return Err(NodeError::input(
                    "b",
                    "a negative exponent gives a float in Python; IntBinaryOperation returns an INT",
                ));
            }
            let e = u32::try_from(b).map_err(|_| overflow())?;
            a.checked_pow(e).ok_or_else(overflow)?
        }
        "And" => a & b,
        "Nand" | "Nor" => !a & b,
        "Or" => a | b,
        "Xor" => a ^ b,
        "Xnor" => !a ^ b,
        "Shl" => {
            if b < 0 {
                return Err(NodeError::input("b", "negative shift count"));
            }
            if b >= 127 || (a != 0 && (a.unsigned_abs().leading_zeros() as i128) <= b) {
                return Err(overflow());
            }
            a << b
        }
        "Shr" => {
            if b < 0 {
                return Err(NodeError::input("b", "negative shift count"));
            }
            a >> b.min(127)
        }
        "Max" => a.max(b),
        "Min" => a.min(b),
        other => {
            return Err(NodeError::input(
                "op",
                format!(
                    "unknown operation '{other}'; allowed: {}",
                    INT_OPS.join(", ")
                ),
            ))
        }
    })
}

struct FloatBinaryOperation;
impl Node for FloatBinaryOperation {
    fn schema(&self) -> NodeSchema {
        let f = |n: &str| {
            InputSpec::float(n)
                .default(0.0)
                .step(0.001)
                .opt("round", false)
        };
        NodeSchema::new("CM_FloatBinaryOperation")
            .display("FloatBinaryOperation")
            .category("math/float")
            .input(InputSpec::combo("op", &FLOAT_OPS))
            .input(f("a"))
            .input(f("b"))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let r = float_op(i.string("op")?, i.float("a")?, i.float("b")?)?;
        Ok(NodeOutput::one(Value::Float(r)))
    }
}

struct IntBinaryOperation;
impl Node for IntBinaryOperation {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CM_IntBinaryOperation")
            .display("IntBinaryOperation")
            .category("math/int")
            .input(InputSpec::combo("op", &INT_OPS))
            .input(InputSpec::int("a").default(0))
            .input(InputSpec::int("b").default(0))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let r = int_op(i.string("op")?, i.int("a")?, i.int("b")?)?;
        Ok(NodeOutput::one(Value::Int(r)))
    }
}

/// NUMBER: an INT or a FLOAT (ComfyMath's own type; no widget, so always linked).
fn number(i: &Inputs, name: &str) -> Result<f64, NodeError> {
    match i.require(name)? {
        Value::Int(v) => Ok(*v as f64),
        Value::Float(v) => Ok(*v),
        Value::Bool(b) => Ok(*b as i32 as f64),
        other => Err(NodeError::input(
            name,
            format!("expected a NUMBER (INT or FLOAT), got {}", other.kind()),
        )),
    }
}

struct NumberBinaryOperation;
impl Node for NumberBinaryOperation {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CM_NumberBinaryOperation")
            .display("NumberBinaryOperation")
            .category("math/number")
            .input(InputSpec::combo("op", &FLOAT_OPS))
            .input(InputSpec::of("a", "NUMBER").default(0.0))
            .input(InputSpec::of("b", "NUMBER").default(0.0))
            .output(OutputSpec::new("NUMBER"))
    }
    /// Both operands as floats, then the float operation (the result is a float).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let r = float_op(i.string("op")?, number(i, "a")?, number(i, "b")?)?;
        Ok(NodeOutput::one(Value::Float(r)))
    }
}

fn conversion(name: &str, display: &str) -> NodeSchema {
    NodeSchema::new(name)
        .display(display)
        .category("math/conversion")
}

struct IntToNumber;
impl Node for IntToNumber {
    fn schema(&self) -> NodeSchema {
        conversion("CM_IntToNumber", "IntToNumber")
            .input(InputSpec::int("a").default(0))
            .output(OutputSpec::new("NUMBER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("a")?)))
    }
}

struct FloatToNumber;
impl Node for FloatToNumber {
    fn schema(&self) -> NodeSchema {
        conversion("CM_FloatToNumber", "FloatToNumber")
            .input(InputSpec::float("a").default(0.0).opt("round", false))
            .output(OutputSpec::new("NUMBER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Float(i.float("a")?)))
    }
}

struct NumberToInt;
impl Node for NumberToInt {
    fn schema(&self) -> NodeSchema {
        conversion("CM_NumberToInt", "NumberToInt")
            .input(InputSpec::of("a", "NUMBER").default(0.0))
            .output(OutputSpec::new("INT"))
    }
    /// Python's `int()`: an INT as it is, a FLOAT truncated toward zero.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let v = match i.require("a")? {
            Value::Int(v) => *v,
            Value::Bool(b) => *b as i128,
            _ => {
                let f = number(i, "a")?;
                if !f.is_finite() {
                    return Err(NodeError::input(
                        "a",
                        format!("cannot convert {f} to an integer"),
                    ));
                }
                f.trunc() as i128
            }
        };
        Ok(NodeOutput::one(Value::Int(v)))
    }
}

struct NumberToFloat;
impl Node for NumberToFloat {
    fn schema(&self) -> NodeSchema {
        conversion("CM_NumberToFloat", "NumberToFloat")
            .input(InputSpec::of("a", "NUMBER").default(0.0))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Float(number(i, "a")?)))
    }
}

struct FloatToInt;
impl Node for FloatToInt {
    fn schema(&self) -> NodeSchema {
        conversion("CM_FloatToInt", "FloatToInt")
            .input(InputSpec::float("a").default(0.0).opt("round", false))
            .output(OutputSpec::new("INT"))
    }
    /// Python's `int()`: truncation toward zero.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let f = i.float("a")?;
        if !f.is_finite() {
            return Err(NodeError::input(
                "a",
                format!("cannot convert {f} to an integer"),
            ));
        }
        Ok(NodeOutput::one(Value::Int(f.trunc() as i128)))
    }
}

struct IntToFloat;
impl Node for IntToFloat {
    fn schema(&self) -> NodeSchema {
        conversion("CM_IntToFloat", "IntToFloat")
            .input(InputSpec::int("a").default(0))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Float(i.int("a")? as f64)))
    }
}

/// SDXL's trained resolutions: width, height and the pack's aspect ratio value.
const SDXL_RESOLUTIONS: [(i128, i128, f64); 9] = [
    (1024, 1024, 1.0),
    (1152, 896, 1.2857142857142858),
    (896, 1152, 0.7777777777777778),
    (1216, 832, 1.4615384615384615),
    (832, 1216, 0.6842105263157895),
    (1344, 768, 1.75),
    (768, 1344, 0.5714285714285714),
    (1536, 640, 2.4),
    (640, 1536, 0.4166666666666667),
];

fn graphics(name: &str, display: &str) -> NodeSchema {
    NodeSchema::new(name)
        .display(display)
        .category("math/graphics")
}

struct SdxlResolution;
impl Node for SdxlResolution {
    fn schema(&self) -> NodeSchema {
        let names: Vec<String> = SDXL_RESOLUTIONS
            .iter()
            .map(|(w, h, _)| format!("{w}x{h}"))
            .collect();
        graphics("CM_SDXLResolution", "SDXLResolution")
            .input(InputSpec::combo("resolution", &names))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let r = i.string("resolution")?;
        let mut parts = r.split('x').map(|p| p.trim().parse::<i128>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(w)), Some(Ok(h)), None) => {
                Ok(NodeOutput::values(vec![Value::Int(w), Value::Int(h)]))
            }
            _ => Err(NodeError::input(
                "resolution",
                format!("'{r}' is not WIDTHxHEIGHT"),
            )),
        }
    }
}

struct NearestSdxlResolution;
impl Node for NearestSdxlResolution {
    fn schema(&self) -> NodeSchema {
        graphics("CM_NearestSDXLResolution", "NearestSDXLResolution")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
    }
    /// The SDXL resolution whose aspect ratio is closest to the image's (the first on ties).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<comfyrs::node::types::Image>("image")?;
        let d = image.0.dims();
        if d.len() != 4 || d[1] == 0 {
            return Err(NodeError::input(
                "image",
                format!("expected a non-empty IMAGE, got shape {d:?}"),
            ));
        }
        let ratio = d[2] as f64 / d[1] as f64;
        let mut best = SDXL_RESOLUTIONS[0];
        for r in SDXL_RESOLUTIONS {
            if (ratio - r.2).abs() < (ratio - best.2).abs() {
                best = r;
            }
        }
        Ok(NodeOutput::values(vec![
            Value::Int(best.0),
            Value::Int(best.1),
        ]))
    }
}
