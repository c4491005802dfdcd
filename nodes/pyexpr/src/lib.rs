//! A parser for the Python expressions ComfyUI's math nodes evaluate with `ast.parse(...,
//! mode="eval")`: numbers, names, attributes (`a.width`), subscripts with a constant
//! (`a[0]`), calls, unary `- + ~ not`, binary `** * / // % + - << >> & ^ |`, comparisons and
//! `and`/`or`, with Python's precedence. Each node pack evaluates the tree with its own
//! semantics (the packs differ: one turns comparisons into 1/0 and keeps only the first, the
//! other chains them). Also Python's `re` replacement syntax in the `regex` crate's terms.

/// A number literal as Python reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

/// A syntax error, worded like Python's where it matters.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError(pub String);

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> SyntaxError {
    SyntaxError(msg.into())
}

/// The parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(Num),
    /// A string literal (`'x'` or `"x"`).
    Str(String),
    Name(String),
    Attr(Box<Expr>, String),
    /// `value[index]`; `index` is the subscript expression.
    Subscript(Box<Expr>, Box<Expr>),
    /// `-`, `+`, `~` or `not`.
    Unary(&'static str, Box<Expr>),
    /// An arithmetic or bitwise operator.
    Bin(&'static str, Box<Expr>, Box<Expr>),
    /// `and` / `or` with all their operands (Python's BoolOp).
    Bool(&'static str, Vec<Expr>),
    /// A comparison chain: the left operand and `(operator, operand)` pairs.
    Compare(Box<Expr>, Vec<(&'static str, Expr)>),
    /// A call of a plain name.
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Num),
    Str(String),
    Name(String),
    Op(&'static str),
}

const OPS: [&str; 26] = [
    "**", "//", "<<", ">>", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "^", "&", "|", "~",
    "<", ">", "(", ")", ",", ".", "=", "[", "]",
];

const CMP: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

fn lex(s: &str) -> Result<Vec<Tok>, SyntaxError> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let quote = c;
            i += 1;
            let mut text = String::new();
            loop {
                match b.get(i) {
                    None => return Err(err("unterminated string literal")),
                    Some(&q) if q == quote => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = b
                            .get(i + 1)
                            .copied()
                            .ok_or_else(|| err("unterminated string literal"))?;
                        text.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        text.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(text));
        } else if c.is_ascii_digit()
            || (c == '.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.' || b[i] == '_') {
                i += 1;
            }
            if i < b.len() && (b[i] == 'e' || b[i] == 'E') {
                i += 1;
                if i < b.len() && (b[i] == '+' || b[i] == '-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = b[start..i].iter().filter(|&&c| c != '_').collect();
            let n = if text.contains(['.', 'e', 'E']) {
                Num::Float(
                    text.parse()
                        .map_err(|_| err(format!("invalid number '{text}'")))?,
                )
            } else {
                Num::Int(
                    text.parse()
                        .map_err(|_| err(format!("invalid number '{text}'")))?,
                )
            };
            out.push(Tok::Num(n));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(b[start..i].iter().collect()));
        } else {
            let rest: String = b[i..b.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(*op))
                .ok_or_else(|| err(format!("invalid syntax at '{c}'")))?;
            i += op.chars().count();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self) -> Option<&'static str> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(o)) => Some(o),
            _ => None,
        }
    }
    fn peek_name(&self, n: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Name(x)) if x == n)
    }
    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op() == Some(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn boolop(&mut self, word: &'static str) -> Result<Expr, SyntaxError> {
        let operand = |p: &mut Self| {
            if word == "or" {
                p.boolop("and")
            } else {
                p.not()
            }
        };
        let first = operand(self)?;
        let mut values = vec![first];
        while self.peek_name(word) {
            self.pos += 1;
            values.push(operand(self)?);
        }
        Ok(if values.len() == 1 {
            values.pop().expect("one value")
        } else {
            Expr::Bool(word, values)
        })
    }
    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek_name("not") {
            self.pos += 1;
            return Ok(Expr::Unary("not", Box::new(self.not()?)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, SyntaxError> {
        let l = self.level(0)?;
        let mut rest = Vec::new();
        while let Some(op) = self.peek_op().filter(|o| CMP.contains(o)) {
            self.pos += 1;
            rest.push((op, self.level(0)?));
        }
        Ok(if rest.is_empty() {
            l
        } else {
            Expr::Compare(Box::new(l), rest)
        })
    }
    /// Binary levels from loosest to tightest: `|`, `^`, `&`, shifts, `+ -`, `* / // %`.
    fn level(&mut self, k: usize) -> Result<Expr, SyntaxError> {
        const LEVELS: [&[&str]; 6] = [
            &["|"],
            &["^"],
            &["&"],
            &["<<", ">>"],
            &["+", "-"],
            &["*", "/", "//", "%"],
        ];
        if k == LEVELS.len() {
            return self.unary();
        }
        let mut l = self.level(k + 1)?;
        while let Some(op) = self.peek_op().filter(|o| LEVELS[k].contains(o)) {
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.level(k + 1)?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if let Some(op @ ("-" | "+" | "~")) = self.peek_op() {
            self.pos += 1;
            return Ok(Expr::Unary(op, Box::new(self.unary()?)));
        }
        self.power()
    }
    fn power(&mut self) -> Result<Expr, SyntaxError> {
        let base = self.postfix()?;
        if self.eat("**") {
            return Ok(Expr::Bin("**", Box::new(base), Box::new(self.unary()?)));
        }
        Ok(base)
    }
    fn postfix(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.atom()?;
        loop {
            if self.eat(".") {
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Name(attr)) => {
                        self.pos += 1;
                        e = Expr::Attr(Box::new(e), attr);
                    }
                    _ => return Err(err("invalid syntax after '.'")),
                }
            } else if self.eat("[") {
                let index = self.boolop("or")?;
                if !self.eat("]") {
                    return Err(err("invalid syntax: '[' was never closed"));
                }
                e = Expr::Subscript(Box::new(e), Box::new(index));
            } else if self.peek_op() == Some("(") {
                let Expr::Name(name) = e else {
                    return Err(err("only plain names can be called"));
                };
                self.pos += 1;
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.boolop("or")?);
                        if self.eat(")") {
                            break;
                        }
                        if !self.eat(",") {
                            return Err(err("invalid syntax in a function call"));
                        }
                    }
                }
                e = Expr::Call(name, args);
            } else {
                return Ok(e);
            }
        }
    }
    fn atom(&mut self) -> Result<Expr, SyntaxError> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match t {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Op("(")) => {
                let e = self.boolop("or")?;
                if !self.eat(")") {
                    return Err(err("invalid syntax: '(' was never closed"));
                }
                Ok(e)
            }
            Some(Tok::Name(n)) => Ok(Expr::Name(n)),
            Some(t) => Err(err(format!("invalid syntax at {t:?}"))),
            None => Err(err("invalid syntax: unexpected end of expression")),
        }
    }
}

/// Parses one expression (the whole input).
pub fn parse(s: &str) -> Result<Expr, SyntaxError> {
    let mut p = Parser {
        toks: lex(s)?,
        pos: 0,
    };
    let e = p.boolop("or")?;
    if p.pos != p.toks.len() {
        return Err(err("invalid syntax: unexpected trailing input"));
    }
    Ok(e)
}

/// A Python `re.sub` replacement string in the `regex` crate's syntax: `\1`/`\g<1>`/`\g<name>`
/// become group references, `$` is literal, `\n`/`\t`/`\\` are escapes.
pub fn re_replacement(py: &str) -> String {
    let mut out = String::new();
    let mut chars = py.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut num = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        if num.len() == 2 {
                            break;
                        }
                        num.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{num}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|&x| x != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            ch => out.push(ch),
        }
    }
    out
}

/// Python's `round()` of a float to an integer value: to nearest, ties to even.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_python() {
        // 2 ** -1 binds the unary minus to the exponent; * before +; | loosest of the binary.
        let e = parse("1 + 2 * 3 | 4").unwrap();
        assert!(matches!(e, Expr::Bin("|", _, _)));
        let e = parse("-2 ** 2").unwrap();
        assert!(matches!(e, Expr::Unary("-", _)));
        let e = parse("a[0] < b.width <= 3 and not c or d").unwrap();
        assert!(matches!(e, Expr::Bool("or", ref v) if v.len() == 2));
    }

    #[test]
    fn replacement_strings_translate() {
        assert_eq!(re_replacement("<\\1>"), "<${1}>");
        assert_eq!(re_replacement("\\g<name>$"), "${name}$$");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(parse("1 +").is_err());
        assert!(parse("(1").is_err());
        assert!(parse("1 2").is_err());
        assert!(parse("'open").is_err());
    }
}
