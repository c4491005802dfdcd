//! `SimpleMath+`: a Python expression over `a`, `b`, `c` with the pack's semantics, which
//! differ from MathExpression's: tensors (IMAGE, MASK) become their shape as a list (`a[2]`
//! is an image's width), strings are parsed as floats, comparison chains compare every
//! operand with the first one and give 1 or 0, `and`/`or` give one of their operands, the
//! calls are `min max round sum len`, and anything the pack does not handle evaluates to 0
//! (attributes, non-constant subscripts, string literals) or to None (unknown names and
//! functions). The result is returned rounded half-to-even as INT and as it is as FLOAT (an
//! integer result stays an integer, as in the pack); NaN becomes 0.0.

use comfyrs::node::types::{Image, Latent, Mask};
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Value,
};
use comfyrs_pyexpr::{round_half_even, Expr, Num};

#[derive(Debug, Clone, PartialEq)]
enum V {
    Int(i128),
    Float(f64),
    Bool(bool),
    List(Vec<V>),
    None,
}

fn type_error(msg: impl Into<String>) -> NodeError {
    NodeError::Failed {
        message: msg.into(),
        exception_type: "TypeError".into(),
    }
}

fn py_type(v: &V) -> &'static str {
    match v {
        V::Int(_) => "int",
        V::Float(_) => "float",
        V::Bool(_) => "bool",
        V::List(_) => "list",
        V::None => "NoneType",
    }
}

/// A number operand (bools count as ints), or None.
fn num(v: &V) -> Option<Num> {
    match v {
        V::Int(i) => Some(Num::Int(*i)),
        V::Float(f) => Some(Num::Float(*f)),
        V::Bool(b) => Some(Num::Int(*b as i128)),
        _ => None,
    }
}

fn from_num(n: Num) -> V {
    match n {
        Num::Int(i) => V::Int(i),
        Num::Float(f) => V::Float(f),
    }
}

fn f(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(x) => x,
    }
}

fn truthy(v: &V) -> bool {
    match v {
        V::Int(i) => *i != 0,
        V::Float(x) => *x != 0.0,
        V::Bool(b) => *b,
        V::List(l) => !l.is_empty(),
        V::None => false,
    }
}

fn zero_division() -> NodeError {
    NodeError::Failed {
        message: "division by zero".into(),
        exception_type: "ZeroDivisionError".into(),
    }
}

fn floor_div(a: i128, b: i128) -> Result<i128, NodeError> {
    if b == 0 {
        return Err(zero_division());
    }
    let q = a / b;
    Ok(if a % b != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

fn py_fmod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((m < 0.0) != (b < 0.0)) {
        m + b
    } else {
        m
    }
}

fn arith(op: &str, l: &V, r: &V) -> Result<V, NodeError> {
    use Num::{Float as F, Int as I};
    if let (V::List(a), V::List(b)) = (l, r) {
        if op == "+" {
            return Ok(V::List(a.iter().chain(b).cloned().collect()));
        }
    }
    let (Some(a), Some(b)) = (num(l), num(r)) else {
        return Err(type_error(format!(
            "unsupported operand type(s) for {op}: '{}' and '{}'",
            py_type(l),
            py_type(r)
        )));
    };
    let overflow = || NodeError::msg("integer overflow");
    Ok(from_num(match (op, a, b) {
        ("+", I(x), I(y)) => I(x.checked_add(y).ok_or_else(overflow)?),
        ("-", I(x), I(y)) => I(x.checked_sub(y).ok_or_else(overflow)?),
        ("*", I(x), I(y)) => I(x.checked_mul(y).ok_or_else(overflow)?),
        ("+", x, y) => F(f(x) + f(y)),
        ("-", x, y) => F(f(x) - f(y)),
        ("*", x, y) => F(f(x) * f(y)),
        ("/", x, y) => {
            if f(y) == 0.0 {
                return Err(zero_division());
            }
            F(f(x) / f(y))
        }
        ("//", I(x), I(y)) => I(floor_div(x, y)?),
        ("//", x, y) => {
            if f(y) == 0.0 {
                return Err(zero_division());
            }
            F((f(x) / f(y)).floor())
        }
        ("%", I(x), I(y)) => I(x - y * floor_div(x, y)?),
        ("%", x, y) => {
            if f(y) == 0.0 {
                return Err(zero_division());
            }
            F(py_fmod(f(x), f(y)))
        }
        ("**", I(x), I(y)) if y >= 0 => I(x
            .checked_pow(u32::try_from(y).map_err(|_| overflow())?)
            .ok_or_else(overflow)?),
        ("**", x, y) => F(f(x).powf(f(y))),
        (other, ..) => {
            return Err(NodeError::Failed {
                message: format!("operator {other} is not supported"),
                exception_type: "KeyError".into(),
            })
        }
    }))
}

fn compare(op: &str, l: &V, r: &V) -> Result<bool, NodeError> {
    if let (Some(a), Some(b)) = (num(l), num(r)) {
        let ord = match (a, b) {
            (Num::Int(x), Num::Int(y)) => x.partial_cmp(&y),
            (x, y) => f(x).partial_cmp(&f(y)),
        };
        return Ok(match op {
            "==" => ord == Some(std::cmp::Ordering::Equal),
            "!=" => ord != Some(std::cmp::Ordering::Equal),
            "<" => ord == Some(std::cmp::Ordering::Less),
            "<=" => matches!(
                ord,
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            ),
            ">" => ord == Some(std::cmp::Ordering::Greater),
            _ => matches!(
                ord,
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            ),
        });
    }
    match op {
        "==" => Ok(l == r),
        "!=" => Ok(l != r),
        _ => Err(type_error(format!(
            "'{op}' not supported between instances of '{}' and '{}'",
            py_type(l),
            py_type(r)
        ))),
    }
}

struct Scope {
    vars: [V; 4],
}

impl Scope {
    fn eval(&self, e: &Expr) -> Result<V, NodeError> {
        Ok(match e {
            Expr::Num(n) => from_num(*n),
            Expr::Name(n) => match n.as_str() {
                "a" => self.vars[0].clone(),
                "b" => self.vars[1].clone(),
                "c" => self.vars[2].clone(),
                "d" => self.vars[3].clone(),
                _ => V::None,
            },
            Expr::Bin(op, l, r) => arith(op, &self.eval(l)?, &self.eval(r)?)?,
            Expr::Unary(op, x) => {
                let v = self.eval(x)?;
                match *op {
                    "-" => match num(&v) {
                        Some(Num::Int(i)) => V::Int(-i),
                        Some(Num::Float(x)) => V::Float(-x),
                        None => {
                            return Err(type_error(format!(
                                "bad operand type for unary -: '{}'",
                                py_type(&v)
                            )))
                        }
                    },
                    "not" => V::Bool(!truthy(&v)),
                    other => {
                        return Err(NodeError::Failed {
                            message: format!("unary {other} is not supported"),
                            exception_type: "KeyError".into(),
                        })
                    }
                }
            }
            Expr::Compare(l, rest) => {
                // Every comparison is against the first operand, as in the pack.
                let left = self.eval(l)?;
                for (op, r) in rest {
                    if !compare(op, &left, &self.eval(r)?)? {
                        return Ok(V::Int(0));
                    }
                }
                V::Int(1)
            }
            Expr::Bool(op, values) => {
                let vals: Vec<V> = values
                    .iter()
                    .map(|v| self.eval(v))
                    .collect::<Result<_, _>>()?;
                if vals.len() != 2 {
                    return Err(type_error(format!(
                        "<lambda>() takes 2 positional arguments but {} were given",
                        vals.len()
                    )));
                }
                let (x, y) = (&vals[0], &vals[1]);
                match (*op, truthy(x)) {
                    ("and", false) | ("or", true) => x.clone(),
                    _ => y.clone(),
                }
            }
            Expr::Call(name, args) => {
                let vals: Vec<V> = args
                    .iter()
                    .map(|a| self.eval(a))
                    .collect::<Result<_, _>>()?;
                self.call(name, vals)?
            }
            Expr::Subscript(value, index) => match index.as_ref() {
                Expr::Num(Num::Int(i)) => {
                    let v = self.eval(value)?;
                    let V::List(items) = &v else {
                        return Err(type_error(format!(
                            "'{}' object is not subscriptable",
                            py_type(&v)
                        )));
                    };
                    let k = if *i < 0 { *i + items.len() as i128 } else { *i };
                    usize::try_from(k)
                        .ok()
                        .and_then(|k| items.get(k))
                        .cloned()
                        .ok_or_else(|| NodeError::Failed {
                            message: "list index out of range".into(),
                            exception_type: "IndexError".into(),
                        })?
                }
                _ => V::Int(0),
            },
            Expr::Str(_) | Expr::Attr(..) => V::Int(0),
        })
    }

    fn call(&self, name: &str, vals: Vec<V>) -> Result<V, NodeError> {
        // One argument must be a list (iterated); several are the items themselves.
        let items = |vals: Vec<V>| -> Result<Vec<V>, NodeError> {
            match vals.as_slice() {
                [V::List(l)] => Ok(l.clone()),
                [v] => Err(type_error(format!(
                    "'{}' object is not iterable",
                    py_type(v)
                ))),
                _ => Ok(vals),
            }
        };
        Ok(match name {
            "min" | "max" => {
                let items = items(vals)?;
                let mut best = items
                    .first()
                    .cloned()
                    .ok_or_else(|| NodeError::input("value", format!("{name}() of nothing")))?;
                for v in &items[1..] {
                    let better = if name == "min" {
                        compare("<", v, &best)?
                    } else {
                        compare(">", v, &best)?
                    };
                    if better {
                        best = v.clone();
                    }
                }
                best
            }
            // sum(iterable[, start])
            "sum" => {
                let (list, start) = match vals.as_slice() {
                    [V::List(l)] => (l.clone(), V::Int(0)),
                    [V::List(l), s] => (l.clone(), s.clone()),
                    [v, ..] => {
                        return Err(type_error(format!(
                            "'{}' object is not iterable",
                            py_type(v)
                        )))
                    }
                    [] => {
                        return Err(type_error(
                            "sum() takes at least 1 positional argument (0 given)",
                        ))
                    }
                };
                let mut acc = start;
                for v in list {
                    acc = arith("+", &acc, &v)?;
                }
                acc
            }
            "len" => match vals.as_slice() {
                [V::List(l)] => V::Int(l.len() as i128),
                [v] => {
                    return Err(type_error(format!(
                        "object of type '{}' has no len()",
                        py_type(v)
                    )))
                }
                _ => return Err(type_error("len() takes exactly one argument")),
            },
            "round" => match vals.as_slice() {
                [v] => match num(v) {
                    Some(Num::Int(i)) => V::Int(i),
                    Some(Num::Float(x)) => V::Int(to_int(round_half_even(x))?),
                    None => {
                        return Err(type_error(format!(
                            "type {} doesn't define __round__",
                            py_type(v)
                        )))
                    }
                },
                [v, V::Int(n)] => match num(v) {
                    Some(Num::Int(i)) if *n >= 0 => V::Int(i),
                    Some(x) => {
                        let p = 10f64.powi(*n as i32);
                        V::Float(round_half_even(f(x) * p) / p)
                    }
                    None => {
                        return Err(type_error(format!(
                            "type {} doesn't define __round__",
                            py_type(v)
                        )))
                    }
                },
                _ => return Err(type_error("round() takes a number and optional digits")),
            },
            _ => V::None,
        })
    }
}

fn to_int(x: f64) -> Result<i128, NodeError> {
    if x.is_infinite() {
        return Err(NodeError::Failed {
            message: "cannot convert float infinity to integer".into(),
            exception_type: "OverflowError".into(),
        });
    }
    Ok(x as i128)
}

/// An input as the pack sees it: tensors by their shape, strings parsed as floats.
fn input(i: &Inputs, name: &str) -> Result<V, NodeError> {
    let Some(v) = i.get(name) else {
        return Ok(V::Float(0.0));
    };
    let shape = |dims: &[usize]| V::List(dims.iter().map(|&d| V::Int(d as i128)).collect());
    Ok(match v {
        Value::Int(x) => V::Int(*x),
        Value::Float(x) => V::Float(*x),
        Value::Bool(b) => V::Bool(*b),
        Value::String(s) => V::Float(py_float(s).ok_or_else(|| NodeError::Failed {
            message: format!("could not convert string to float: '{s}'"),
            exception_type: "ValueError".into(),
        })?),
        Value::Object(_) => {
            if let Some(t) = v.downcast::<Image>() {
                shape(t.0.dims())
            } else if let Some(t) = v.downcast::<Mask>() {
                shape(t.0.dims())
            } else if v.downcast::<Latent>().is_some() {
                return Err(type_error(format!(
                    "input '{name}': a LATENT is a dict, not a number"
                )));
            } else {
                return Err(type_error(format!(
                    "input '{name}': {} is not a number",
                    v.kind()
                )));
            }
        }
        other => {
            return Err(type_error(format!(
                "input '{name}': {} is not a number",
                other.kind()
            )))
        }
    })
}

/// Python's `float(str)`: surrounding whitespace, `inf`/`nan`/`infinity` in any case,
/// underscores between digits.
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
        _ => t.replace('_', "").parse().ok(),
    }
}

pub(crate) struct SimpleMath;
impl Node for SimpleMath {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SimpleMath+")
            .display("\u{1f527} Simple Math")
            .category("essentials/utilities")
            .input(InputSpec::of("a", "*").default(0.0).optional())
            .input(InputSpec::of("b", "*").default(0.0).optional())
            .input(InputSpec::of("c", "*").default(0.0).optional())
            .input(InputSpec::string("value").multiline(false).default(""))
            .output(OutputSpec::new("INT"))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let expr = comfyrs_pyexpr::parse(i.string("value")?).map_err(|e| NodeError::Failed {
            message: e.0,
            exception_type: "SyntaxError".into(),
        })?;
        let scope = Scope {
            vars: [
                input(i, "a")?,
                input(i, "b")?,
                input(i, "c")?,
                V::Float(0.0),
            ],
        };
        let result = scope.eval(&expr)?;
        let (int, float) = match result {
            V::Int(x) => (x, Value::Int(x)),
            V::Bool(b) => (b as i128, Value::Bool(b)),
            V::Float(x) if x.is_nan() => (0, Value::Float(0.0)),
            V::Float(x) => (to_int(round_half_even(x))?, Value::Float(x)),
            other => {
                return Err(type_error(format!(
                    "must be real number, not {}",
                    py_type(&other)
                )))
            }
        };
        Ok(NodeOutput::values(vec![Value::Int(int), float]))
    }
}
