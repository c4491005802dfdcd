//! `MathExpression|pysssss`: a Python arithmetic expression over the inputs `a`, `b`, `c`,
//! evaluated with Python's number semantics (ints stay ints, `/` gives a float, `//` and `%`
//! floor, `round` rounds half to even). Supported as the pack supports them: numbers, `+ - * /
//! // % **`, `^ & | ~ << >>`, `and`/`or`/`not` (giving 1 or 0), one comparison per
//! comparison node (1 or 0), `a.width`/`a.height` of an IMAGE or LATENT input, and the calls
//! `round ceil floor min max randomint randomchoice sqrt int iif`. Named widget references
//! (`NodeTitle.widget`) read the workflow in `extra_pnginfo` and the prompt.

use comfyrs::env::Environment;
use comfyrs::node::types::{Image, Latent};
use comfyrs::node::{
    Fingerprint, Hidden, InputSpec, Inputs, LiteralInputs, Node, NodeContext, NodeError,
    NodeOutput, NodeSchema, OutputSpec, Value,
};
use comfyrs_pyexpr::{round_half_even, Expr, Num};
use serde_json::{json, Map, Value as Json};

trait NumExt {
    fn f(self) -> f64;
    fn truthy(self) -> bool;
}

impl NumExt for Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn truthy(self) -> bool {
        match self {
            Num::Int(i) => i != 0,
            Num::Float(f) => f != 0.0,
        }
    }
}

fn err(msg: impl Into<String>) -> NodeError {
    NodeError::input("expression", msg.into())
}

fn parse(s: &str) -> Result<Expr, NodeError> {
    comfyrs_pyexpr::parse(s).map_err(|e| NodeError::Failed {
        message: e.0,
        exception_type: "SyntaxError".into(),
    })
}

fn to_int(f: f64) -> Result<i128, NodeError> {
    if !f.is_finite() {
        return Err(err(format!("cannot convert float {f} to integer")));
    }
    Ok(f.trunc() as i128)
}

fn floor_div_int(a: i128, b: i128) -> Result<i128, NodeError> {
    if b == 0 {
        return Err(NodeError::Failed {
            message: "integer division or modulo by zero".into(),
            exception_type: "ZeroDivisionError".into(),
        });
    }
    let q = a / b;
    Ok(if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

fn zero() -> NodeError {
    NodeError::Failed {
        message: "division by zero".into(),
        exception_type: "ZeroDivisionError".into(),
    }
}

fn py_fmod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((m < 0.0) != (b < 0.0)) {
        m + b
    } else {
        m
    }
}

fn int_only(op: &str, l: Num, r: Num) -> Result<(i128, i128), NodeError> {
    match (l, r) {
        (Num::Int(a), Num::Int(b)) => Ok((a, b)),
        _ => Err(NodeError::Failed {
            message: format!("unsupported operand type(s) for {op}: 'float'"),
            exception_type: "TypeError".into(),
        }),
    }
}

fn binop(op: &str, l: Num, r: Num) -> Result<Num, NodeError> {
    use Num::{Float as F, Int as I};
    let ovf = || NodeError::msg("integer overflow");
    Ok(match (op, l, r) {
        ("+", I(a), I(b)) => I(a.checked_add(b).ok_or_else(ovf)?),
        ("-", I(a), I(b)) => I(a.checked_sub(b).ok_or_else(ovf)?),
        ("*", I(a), I(b)) => I(a.checked_mul(b).ok_or_else(ovf)?),
        ("+", a, b) => F(a.f() + b.f()),
        ("-", a, b) => F(a.f() - b.f()),
        ("*", a, b) => F(a.f() * b.f()),
        ("/", a, b) => {
            if b.f() == 0.0 {
                return Err(zero());
            }
            F(a.f() / b.f())
        }
        ("//", I(a), I(b)) => I(floor_div_int(a, b)?),
        ("//", a, b) => {
            if b.f() == 0.0 {
                return Err(zero());
            }
            F((a.f() / b.f()).floor())
        }
        ("%", I(a), I(b)) => I(a - b * floor_div_int(a, b)?),
        ("%", a, b) => {
            if b.f() == 0.0 {
                return Err(zero());
            }
            F(py_fmod(a.f(), b.f()))
        }
        ("**", I(a), I(b)) if b >= 0 => I(a
            .checked_pow(u32::try_from(b).map_err(|_| ovf())?)
            .ok_or_else(ovf)?),
        ("**", a, b) => F(a.f().powf(b.f())),
        ("^", a, b) => {
            let (a, b) = int_only("^", a, b)?;
            I(a ^ b)
        }
        ("&", a, b) => {
            let (a, b) = int_only("&", a, b)?;
            I(a & b)
        }
        ("|", a, b) => {
            let (a, b) = int_only("|", a, b)?;
            I(a | b)
        }
        ("<<", a, b) => {
            let (a, b) = int_only("<<", a, b)?;
            I(a.checked_shl(u32::try_from(b).map_err(|_| ovf())?)
                .ok_or_else(ovf)?)
        }
        (">>", a, b) => {
            let (a, b) = int_only(">>", a, b)?;
            I(a >> b.clamp(0, 127))
        }
        ("and", a, b) => I((a.truthy() && b.truthy()) as i128),
        ("or", a, b) => I((a.truthy() || b.truthy()) as i128),
        (cmp, a, b) => {
            let (x, y) = (a.f(), b.f());
            let t = match (cmp, a, b) {
                ("==", I(p), I(q)) => p == q,
                ("!=", I(p), I(q)) => p != q,
                ("<", I(p), I(q)) => p < q,
                ("<=", I(p), I(q)) => p <= q,
                (">", I(p), I(q)) => p > q,
                (">=", I(p), I(q)) => p >= q,
                ("==", ..) => x == y,
                ("!=", ..) => x != y,
                ("<", ..) => x < y,
                ("<=", ..) => x <= y,
                (">", ..) => x > y,
                (">=", ..) => x >= y,
                _ => return Err(err(format!("operator {cmp} not supported"))),
            };
            I(t as i128)
        }
    })
}

struct Scope<'a> {
    inputs: &'a Inputs,
    ctx: &'a NodeContext<'a>,
}

impl Scope<'_> {
    fn size(&self, name: &str, attr: &str) -> Result<Num, NodeError> {
        let v = self.inputs.get(name).ok_or_else(|| {
            err(format!(
                "'{name}' is not connected, so {name}.{attr} has no value"
            ))
        })?;
        let (h, w) = if let Some(img) = v.downcast::<Image>() {
            let d = img.0.dims();
            (d[1], d[2])
        } else if let Some(l) = v.downcast::<Latent>() {
            let d = l.samples.dims();
            (d[d.len() - 2] * 8, d[d.len() - 1] * 8)
        } else {
            return Err(err(format!(
                "{name}.{attr}: '{name}' is a {}, not an IMAGE or LATENT",
                v.kind()
            )));
        };
        Ok(Num::Int(if attr == "width" { w } else { h } as i128))
    }

    /// `Node.widget`: the widget value of the node titled (or with S&R name) `node` in the
    /// workflow of extra_pnginfo, read from the prompt.
    fn widget(&self, node: &str, widget: &str) -> Result<Num, NodeError> {
        let nodes = self
            .ctx
            .extra_pnginfo
            .and_then(|e| e.get("workflow"))
            .and_then(|w| w.get("nodes"))
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let found = nodes.iter().find_map(|n| {
            let sr = n
                .get("properties")
                .and_then(|p| p.get("Node name for S&R"))
                .and_then(Json::as_str)
                .or_else(|| n.get("type").and_then(Json::as_str));
            let title = n.get("title").and_then(Json::as_str);
            (sr == Some(node) || title == Some(node)).then(|| n.get("id").cloned())
        });
        let Some(Some(id)) = found else {
            return Err(NodeError::Failed {
                message: format!("Node not found: {node}.{widget}"),
                exception_type: "NameError".into(),
            });
        };
        let id = match &id {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let prompt = self.ctx.prompt.json();
        match prompt.get(&id).and_then(|n| n.get("inputs")).and_then(|i| i.get(widget)) {
            Some(Json::Array(_)) => Err(NodeError::Failed {
                message: "Converted widgets are not supported via named reference, use the inputs instead.".into(),
                exception_type: "ValueError".into(),
            }),
            Some(v) => json_num(v).ok_or_else(|| err(format!("{node}.{widget} is not a number"))),
            None => Err(NodeError::Failed {
                message: format!("Widget not found: {node}.{widget}"),
                exception_type: "NameError".into(),
            }),
        }
    }

    fn eval(&self, e: &Expr) -> Result<Num, NodeError> {
        match e {
            Expr::Num(n) => Ok(*n),
            Expr::Name(n) if ["a", "b", "c"].contains(&n.as_str()) => match self.inputs.get(n) {
                Some(Value::Int(i)) => Ok(Num::Int(*i)),
                Some(Value::Float(f)) => Ok(Num::Float(*f)),
                Some(Value::Bool(b)) => Ok(Num::Int(*b as i128)),
                Some(_) => Err(NodeError::Failed {
                    message: format!("Compex types (LATENT/IMAGE) need to reference their width/height, e.g. {n}.width"),
                    exception_type: "TypeError".into(),
                }),
                None => Err(NodeError::Failed {
                    message: format!("Compex types (LATENT/IMAGE) need to reference their width/height, e.g. {n}.width"),
                    exception_type: "TypeError".into(),
                }),
            },
            Expr::Name(n) => Err(NodeError::Failed {
                message: format!("Name not found: {n}"),
                exception_type: "NameError".into(),
            }),
            Expr::Attr(target, attr) => {
                let Expr::Name(n) = target.as_ref() else {
                    return Err(NodeError::Failed {
                        message: "only NAME.attribute is supported".into(),
                        exception_type: "AttributeError".into(),
                    });
                };
                if ["a", "b", "c"].contains(&n.as_str()) && (attr == "width" || attr == "height") {
                    self.size(n, attr)
                } else {
                    self.widget(n, attr)
                }
            }
            // The pack evaluates `and`/`or` on their first two operands only, and a
            // comparison chain on its first comparison only.
            Expr::Bool(op, values) => {
                let (l, r) = (self.eval(&values[0])?, self.eval(&values[1])?);
                binop(op, l, r)
            }
            Expr::Compare(l, rest) => {
                let (op, r) = &rest[0];
                let (l, r) = (self.eval(l)?, self.eval(r)?);
                binop(op, l, r)
            }
            Expr::Str(_) | Expr::Subscript(..) => Err(NodeError::Failed {
                message: format!("{e:?}"),
                exception_type: "TypeError".into(),
            }),
            Expr::Unary(op, x) => {
                let v = self.eval(x)?;
                Ok(match (*op, v) {
                    ("-", Num::Int(i)) => Num::Int(-i),
                    ("-", Num::Float(f)) => Num::Float(-f),
                    ("+", v) => v,
                    ("~", v) => {
                        let (i, _) = int_only("~", v, Num::Int(0))?;
                        Num::Int(!i)
                    }
                    (_, v) => Num::Int((!v.truthy()) as i128),
                })
            }
            Expr::Bin(op, l, r) => {
                let (l, r) = (self.eval(l)?, self.eval(r)?);
                binop(op, l, r)
            }
            Expr::Call(f, args) => self.call(f, args),
        }
    }

    fn call(&self, f: &str, args: &[Expr]) -> Result<Num, NodeError> {
        let (min, max): (usize, Option<usize>) = match f {
            "round" => (1, Some(2)),
            "ceil" | "floor" | "sqrt" | "int" => (1, Some(1)),
            "min" | "max" | "randomchoice" => (2, None),
            "randomint" => (2, Some(2)),
            "iif" => (3, Some(3)),
            _ => {
                return Err(NodeError::Failed {
                    message: format!("Invalid function call: {f}"),
                    exception_type: "NameError".into(),
                })
            }
        };
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let to = match max {
                None => " or more".to_string(),
                Some(m) => format!(" to {m}"),
            };
            return Err(NodeError::Failed {
                message: format!("Invalid function call: {f} requires {min}{to} arguments"),
                exception_type: "SyntaxError".into(),
            });
        }
        let v: Vec<Num> = args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<_, _>>()?;
        Ok(match f {
            "round" => match (v[0], v.get(1)) {
                (Num::Int(i), None) => Num::Int(i),
                (Num::Float(x), None) => Num::Int(to_int(round_half_even(x))?),
                (Num::Int(i), Some(Num::Int(n))) if *n >= 0 => Num::Int(i),
                (x, Some(Num::Int(n))) => {
                    let p = 10f64.powi(*n as i32);
                    let r = round_half_even(x.f() * p) / p;
                    match x {
                        Num::Int(_) => Num::Int(to_int(r)?),
                        Num::Float(_) => Num::Float(r),
                    }
                }
                (_, Some(_)) => return Err(err("round(): ndigits must be an integer")),
            },
            "ceil" => Num::Int(to_int(v[0].f().ceil())?),
            "floor" => Num::Int(to_int(v[0].f().floor())?),
            "sqrt" => {
                if v[0].f() < 0.0 {
                    return Err(NodeError::Failed {
                        message: "math domain error".into(),
                        exception_type: "ValueError".into(),
                    });
                }
                Num::Float(v[0].f().sqrt())
            }
            "int" => match v[0] {
                Num::Int(i) => Num::Int(i),
                Num::Float(x) => Num::Int(to_int(x)?),
            },
            "min" => v
                .iter()
                .copied()
                .fold(v[0], |m, x| if x.f() < m.f() { x } else { m }),
            "max" => v
                .iter()
                .copied()
                .fold(v[0], |m, x| if x.f() > m.f() { x } else { m }),
            "randomint" => match (v[0], v[1]) {
                (Num::Int(a), Num::Int(b)) if a <= b => Num::Int(rand::random_range(a..=b)),
                _ => {
                    return Err(err(
                        "randomint(min, max) needs two integers with min <= max",
                    ))
                }
            },
            "randomchoice" => v[rand::random_range(0..v.len())],
            _ => {
                if v[0].truthy() {
                    v[1]
                } else {
                    v[2]
                }
            }
        })
    }
}

fn json_num(v: &Json) -> Option<Num> {
    if let Some(i) = v.as_i64() {
        Some(Num::Int(i as i128))
    } else if let Some(b) = v.as_bool() {
        Some(Num::Int(b as i128))
    } else {
        v.as_f64().map(Num::Float)
    }
}

fn autocomplete() -> Json {
    let fns = [
        ("round", "number, dp? = 0"),
        ("ceil", "number"),
        ("floor", "number"),
        ("min", "...numbers"),
        ("max", "...numbers"),
        ("randomint", "min, max"),
        ("randomchoice", "...numbers"),
        ("sqrt", "number"),
        ("int", "number"),
        ("iif", "value, truepart, falsepart"),
    ];
    let words: Vec<Json> = fns
        .iter()
        .map(|(f, hint)| {
            json!({"text": f, "value": format!("{f}()"), "showValue": false, "hint": hint, "caretOffset": -1})
        })
        .collect();
    json!({"words": words, "separator": ""})
}

pub(crate) struct MathExpression;
impl Node for MathExpression {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("MathExpression|pysssss")
            .display("Math Expression \u{1f40d}")
            .category("utils")
            .input(
                InputSpec::string("expression")
                    .multiline(true)
                    .opt("dynamicPrompts", false)
                    .opt("pysssss.autocomplete", autocomplete()),
            )
            .input(InputSpec::of("a", "*").optional())
            .input(InputSpec::of("b", "*").optional())
            .input(InputSpec::of("c", "*").optional())
            .hidden(Hidden::ExtraPngInfo)
            .hidden(Hidden::Prompt)
            .output(OutputSpec::new("INT"))
            .output(OutputSpec::new("FLOAT"))
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let expression = i.string("expression")?.replace('\n', " ").replace('\r', "");
        let e = parse(&expression)?;
        let r = Scope { inputs: i, ctx }.eval(&e)?;
        let (ui_value, int, float) = match r {
            Num::Int(v) => (json!(v as i64), v, v as f64),
            Num::Float(f) => (json!(f), to_int(f)?, f),
        };
        let mut ui = Map::new();
        ui.insert("value".into(), json!([ui_value]));
        Ok(NodeOutput::values(vec![Value::Int(int), Value::Float(float)]).with_ui(ui))
    }
    /// As the pack: an expression mentioning "random" is never cached.
    fn fingerprint(&self, _: &Environment, i: &LiteralInputs) -> Fingerprint {
        match i.string("expression") {
            Ok(e) if e.contains("random") => Fingerprint::Always,
            _ => Fingerprint::Stable,
        }
    }
}
