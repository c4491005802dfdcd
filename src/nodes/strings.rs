//! ComfyUI's string nodes (comfy_extras/nodes_string.py), with Python's string semantics:
//! code-point indexing and slicing, `str.title()`, `str.capitalize()`, `re` flags.

use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use regex::{Regex, RegexBuilder};

fn schema(class: &str, display: &str) -> NodeSchema {
    NodeSchema::new(class)
        .v3()
        .display(display)
        .category("utils/string")
        .module("comfy_extras.nodes_string")
}

fn text(name: &str) -> InputSpec {
    InputSpec::string(name).multiline(true)
}

fn string_out(s: String) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::String(s)))
}

/// Python's `s[start:end]` on code points.
fn py_slice(s: &str, start: i128, end: i128) -> String {
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i128;
    let clamp = |i: i128| -> usize {
        let i = if i < 0 { (i + len).max(0) } else { i.min(len) };
        i as usize
    };
    let (a, b) = (clamp(start), clamp(end));
    if a >= b {
        String::new()
    } else {
        chars[a..b].iter().collect()
    }
}

/// Python's `str.title()`: a cased character after an uncased one starts a word.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_alphabetic();
    }
    out
}

/// Python's `str.capitalize()`: first character upper-cased, the rest lower-cased.
fn py_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

struct Concatenate;
impl Node for Concatenate {
    fn schema(&self) -> NodeSchema {
        schema("StringConcatenate", "Concatenate")
            .input(text("string_a"))
            .input(text("string_b"))
            .input(InputSpec::string("delimiter").multiline(false).default(""))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        string_out([i.string("string_a")?, i.string("string_b")?].join(i.string("delimiter")?))
    }
}

struct Substring;
impl Node for Substring {
    fn schema(&self) -> NodeSchema {
        schema("StringSubstring", "Substring")
            .input(text("string"))
            .input(InputSpec::int("start"))
            .input(InputSpec::int("end"))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        string_out(py_slice(
            i.string("string")?,
            i.int("start")?,
            i.int("end")?,
        ))
    }
}

struct Length;
impl Node for Length {
    fn schema(&self) -> NodeSchema {
        schema("StringLength", "Length")
            .input(text("string"))
            .output(OutputSpec::new("INT").named("length"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(
            i.string("string")?.chars().count() as i128,
        )))
    }
}

struct CaseConverter;
impl Node for CaseConverter {
    fn schema(&self) -> NodeSchema {
        schema("CaseConverter", "Case Converter")
            .input(text("string"))
            .input(InputSpec::combo(
                "mode",
                &["UPPERCASE", "lowercase", "Capitalize", "Title Case"],
            ))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.string("string")?;
        string_out(match i.string("mode")? {
            "UPPERCASE" => s.to_uppercase(),
            "lowercase" => s.to_lowercase(),
            "Capitalize" => py_capitalize(s),
            "Title Case" => py_title(s),
            _ => s.to_string(),
        })
    }
}

struct Trim;
impl Node for Trim {
    fn schema(&self) -> NodeSchema {
        schema("StringTrim", "Trim")
            .input(text("string"))
            .input(InputSpec::combo("mode", &["Both", "Left", "Right"]))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.string("string")?;
        string_out(
            match i.string("mode")? {
                "Both" => s.trim(),
                "Left" => s.trim_start(),
                "Right" => s.trim_end(),
                _ => s,
            }
            .to_string(),
        )
    }
}

struct Replace;
impl Node for Replace {
    fn schema(&self) -> NodeSchema {
        schema("StringReplace", "Replace")
            .input(text("string"))
            .input(text("find"))
            .input(text("replace"))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        string_out(
            i.string("string")?
                .replace(i.string("find")?, i.string("replace")?),
        )
    }
}

struct Contains;
impl Node for Contains {
    fn schema(&self) -> NodeSchema {
        schema("StringContains", "Contains")
            .input(text("string"))
            .input(text("substring"))
            .input(InputSpec::boolean("case_sensitive").default(true))
            .output(OutputSpec::new("BOOLEAN").named("contains"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (s, sub) = (i.string("string")?, i.string("substring")?);
        let found = if i.boolean("case_sensitive")? {
            s.contains(sub)
        } else {
            s.to_lowercase().contains(&sub.to_lowercase())
        };
        Ok(NodeOutput::one(Value::Bool(found)))
    }
}

struct Compare;
impl Node for Compare {
    fn schema(&self) -> NodeSchema {
        schema("StringCompare", "Compare")
            .input(text("string_a"))
            .input(text("string_b"))
            .input(InputSpec::combo(
                "mode",
                &["Starts With", "Ends With", "Equal"],
            ))
            .input(InputSpec::boolean("case_sensitive").default(true))
            .output(OutputSpec::new("BOOLEAN"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (mut a, mut b) = (
            i.string("string_a")?.to_string(),
            i.string("string_b")?.to_string(),
        );
        if !i.boolean("case_sensitive")? {
            a = a.to_lowercase();
            b = b.to_lowercase();
        }
        let r = match i.string("mode")? {
            "Starts With" => a.starts_with(&b),
            "Ends With" => a.ends_with(&b),
            _ => a == b,
        };
        Ok(NodeOutput::one(Value::Bool(r)))
    }
}

/// Compiles a pattern with Python's `re` flags.
fn build_regex(i: &Inputs, pattern: &str) -> Result<Result<Regex, regex::Error>, NodeError> {
    let flag = |name: &str, default: bool| -> Result<bool, NodeError> {
        match i.get(name) {
            Some(_) => i.boolean(name),
            None => Ok(default),
        }
    };
    Ok(RegexBuilder::new(pattern)
        .case_insensitive(flag("case_insensitive", true)?)
        .multi_line(flag("multiline", false)?)
        .dot_matches_new_line(flag("dotall", false)?)
        .build())
}

fn regex_flags(s: NodeSchema, optional: bool) -> NodeSchema {
    let o = |spec: InputSpec| if optional { spec.optional() } else { spec };
    s.input(o(InputSpec::boolean("case_insensitive").default(true)))
        .input(o(InputSpec::boolean("multiline").default(false)))
}

struct RegexMatch;
impl Node for RegexMatch {
    fn schema(&self) -> NodeSchema {
        regex_flags(
            schema("RegexMatch", "Regex Match")
                .input(text("string"))
                .input(text("regex_pattern")),
            false,
        )
        .input(InputSpec::boolean("dotall").default(false))
        .output(OutputSpec::new("BOOLEAN").named("matches"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        // ComfyUI answers False for a pattern that does not compile.
        let matched = match build_regex(i, i.string("regex_pattern")?)? {
            Ok(re) => re.is_match(i.string("string")?),
            Err(_) => false,
        };
        Ok(NodeOutput::one(Value::Bool(matched)))
    }
}

struct RegexExtract;
impl Node for RegexExtract {
    fn schema(&self) -> NodeSchema {
        regex_flags(
            schema("RegexExtract", "Regex Extract")
                .input(text("string"))
                .input(text("regex_pattern"))
                .input(InputSpec::combo(
                    "mode",
                    &["First Match", "All Matches", "First Group", "All Groups"],
                )),
            false,
        )
        .input(InputSpec::boolean("dotall").default(false))
        .input(InputSpec::int("group_index").default(1).min(0).max(100))
        .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.string("string")?;
        let Ok(re) = build_regex(i, i.string("regex_pattern")?)? else {
            return string_out(String::new());
        };
        let group = i.int("group_index")?.max(0) as usize;
        let groups = re.captures_len() - 1;
        let result = match i.string("mode")? {
            "First Match" => re
                .find(s)
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            // re.findall: whole matches without groups, else the first group of each match.
            "All Matches" => re
                .captures_iter(s)
                .map(|c| {
                    let m = if groups == 0 { c.get(0) } else { c.get(1) };
                    m.map_or("", |m| m.as_str()).to_string()
                })
                .collect::<Vec<_>>()
                .join("\n"),
            "First Group" => re
                .captures(s)
                .filter(|_| groups >= group)
                .and_then(|c| c.get(group))
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            "All Groups" => re
                .captures_iter(s)
                .filter(|_| groups > 0 && groups >= group)
                .filter_map(|c| c.get(group).map(|m| m.as_str().to_string()))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        string_out(result)
    }
}

/// Python `re.sub` replacement syntax (`\1`, `\g<1>`, `\g<name>`, `\n`) in regex's `${..}` form.
fn python_replacement(rep: &str) -> String {
    let mut out = String::with_capacity(rep.len());
    let chars: Vec<char> = rep.chars().collect();
    let mut k = 0;
    while k < chars.len() {
        match chars[k] {
            '$' => out.push_str("$$"),
            '\\' if k + 1 < chars.len() => {
                let c = chars[k + 1];
                if c.is_ascii_digit() {
                    let mut j = k + 1;
                    while j < chars.len() && j < k + 3 && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    out.push_str(&format!(
                        "${{{}}}",
                        chars[k + 1..j].iter().collect::<String>()
                    ));
                    k = j;
                    continue;
                }
                if c == 'g' && chars.get(k + 2) == Some(&'<') {
                    if let Some(end) = chars[k + 3..].iter().position(|&x| x == '>') {
                        let name: String = chars[k + 3..k + 3 + end].iter().collect();
                        out.push_str(&format!("${{{name}}}"));
                        k += 4 + end;
                        continue;
                    }
                }
                match c {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                k += 2;
                continue;
            }
            c => out.push(c),
        }
        k += 1;
    }
    out
}

struct RegexReplace;
impl Node for RegexReplace {
    fn schema(&self) -> NodeSchema {
        regex_flags(
            schema("RegexReplace", "Regex Replace")
                .description("Find and replace text using regex patterns.")
                .input(text("string"))
                .input(text("regex_pattern"))
                .input(text("replace")),
            true,
        )
        .input(InputSpec::boolean("dotall").default(false).optional().tooltip(
            "When enabled, the dot (.) character will match any character including newline characters. When disabled, dots won't match newlines.",
        ))
        .input(InputSpec::int("count").default(0).min(0).max(100).optional().tooltip(
            "Maximum number of replacements to make. Set to 0 to replace all occurrences (default). Set to 1 to replace only the first match, 2 for the first two matches, etc.",
        ))
        .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let pattern = i.string("regex_pattern")?;
        let re = build_regex(i, pattern)?.map_err(|e| {
            NodeError::input("regex_pattern", format!("invalid regular expression: {e}"))
        })?;
        let count = match i.get("count") {
            Some(_) => i.int("count")?.max(0) as usize,
            None => 0,
        };
        let rep = python_replacement(i.string("replace")?);
        let s = i.string("string")?;
        let out = if count == 0 {
            re.replace_all(s, rep.as_str())
        } else {
            re.replacen(s, count, rep.as_str())
        };
        string_out(out.into_owned())
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(Concatenate)?;
    r.register(Substring)?;
    r.register(Length)?;
    r.register(CaseConverter)?;
    r.register(Trim)?;
    r.register(Replace)?;
    r.register(Contains)?;
    r.register(Compare)?;
    r.register(RegexMatch)?;
    r.register(RegexExtract)?;
    r.register(RegexReplace)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_semantics() {
        assert_eq!(py_slice("hello", 1, -1), "ell");
        assert_eq!(py_slice("hello", -3, 100), "llo");
        assert_eq!(py_slice("héllo", 0, 2), "hé");
        assert_eq!(py_slice("hello", 3, 1), "");
        assert_eq!(
            py_title("they're bill's 2nd-best"),
            "They'Re Bill'S 2Nd-Best"
        );
        assert_eq!(py_capitalize("hELLO wORLD"), "Hello world");
        assert_eq!(
            python_replacement(r"\2-\1 $ \g<name>"),
            "${2}-${1} $$ ${name}"
        );
    }
}
