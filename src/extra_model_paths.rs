//! ComfyUI's `extra_model_paths.yaml`: more model folders, so comfyrs can use the models of an
//! existing ComfyUI (or A1111) install.
//!
//! The format (ComfyUI's `utils/extra_config.py`): top-level sections with any name; each may
//! hold `base_path` (`~` and `$VAR` expanded; relative to the yaml file's folder),
//! `is_default` (put these folders before the built-in ones), and folder keys (`checkpoints`,
//! `vae`, `loras`, `clip`/`text_encoders`, `unet`/`diffusion_models`, `embeddings`, ...) whose
//! value is one path or several newline-separated paths (a YAML `|` block), relative to
//! `base_path` or, without one, to the yaml file's folder.
//!
//! ```yaml
//! comfyui:
//!     base_path: /opt/ComfyUI/
//!     checkpoints: models/checkpoints/
//!     loras: |
//!         models/loras/
//!         models/more_loras/
//! ```

use crate::env::Paths;
use std::path::{Component, Path, PathBuf};

/// The file name ComfyUI loads from its own folder at start-up (we: from the base/data dir).
pub const DEFAULT_FILE_NAME: &str = "extra_model_paths.yaml";

/// One folder a config adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraModelFolder {
    /// Folder kind as written (`checkpoints`, `clip`, ...).
    pub kind: String,
    pub dir: PathBuf,
    pub is_default: bool,
}

/// A config that cannot be read or does not have the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("extra model paths config {}: {message}", file.display())]
pub struct ExtraPathsError {
    pub file: PathBuf,
    pub message: String,
}

/// Reads and parses a config file.
pub fn load(file: &Path) -> Result<Vec<ExtraModelFolder>, ExtraPathsError> {
    let err = |message: String| ExtraPathsError {
        file: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read: {e}")))?;
    let abs = std::path::absolute(file).map_err(|e| err(format!("bad path: {e}")))?;
    let yaml_dir = abs.parent().unwrap_or(Path::new("/"));
    parse(&text, yaml_dir).map_err(err)
}

/// Reads `file` and adds its folders to `paths` in file order.
pub fn apply(paths: &mut Paths, file: &Path) -> Result<(), ExtraPathsError> {
    for f in load(file)? {
        paths.add_model_folder(&f.kind, f.dir, f.is_default);
    }
    Ok(())
}

/// ComfyUI's start-up order: `BASE/extra_model_paths.yaml` when it exists, then each file
/// given with `--extra-model-paths-config`, in order.
pub fn configure(
    paths: &mut Paths,
    base_dir: &Path,
    files: &[PathBuf],
) -> Result<(), ExtraPathsError> {
    let auto = base_dir.join(DEFAULT_FILE_NAME);
    if auto.is_file() {
        apply(paths, &auto)?;
    }
    for f in files {
        apply(paths, f)?;
    }
    Ok(())
}

/// Parses a config's text; relative paths are resolved against `yaml_dir`. The error message
/// names the section and key at fault.
pub fn parse(text: &str, yaml_dir: &Path) -> Result<Vec<ExtraModelFolder>, String> {
    use serde_yaml::Value;
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let sections = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        other => {
            return Err(format!(
                "the top level must be a mapping of sections (e.g. `comfyui:`), found {}",
                kind_of(&other)
            ))
        }
    };
    let mut out = Vec::new();
    for (name, section) in sections {
        let name = key_name(&name);
        let conf = match section {
            Value::Null => continue,
            Value::Mapping(m) => m,
            other => {
                return Err(format!(
                    "section '{name}' must be a mapping of folder names to paths, found {}",
                    kind_of(&other)
                ))
            }
        };
        let mut base_path = None;
        let mut is_default = false;
        let mut folders = Vec::new();
        for (key, value) in conf {
            let key = key_name(&key);
            match key.as_str() {
                "base_path" => match value {
                    Value::String(s) => {
                        let p = PathBuf::from(expand(&s));
                        base_path = Some(if p.is_absolute() { p } else { yaml_dir.join(p) });
                    }
                    other => {
                        return Err(format!(
                            "'{name}.base_path' must be a string, found {}",
                            kind_of(&other)
                        ))
                    }
                },
                "is_default" => match value {
                    Value::Bool(b) => is_default = b,
                    other => {
                        return Err(format!(
                            "'{name}.is_default' must be true or false, found {}",
                            kind_of(&other)
                        ))
                    }
                },
                _ => match value {
                    Value::String(s) => folders.push((key, s)),
                    Value::Null => {}
                    other => {
                        return Err(format!(
                            "'{name}.{key}' must be a path or newline-separated paths (a string), \
                             found {}",
                            kind_of(&other)
                        ))
                    }
                },
            }
        }
        for (kind, value) in folders {
            for line in value.split('\n') {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let dir = match &base_path {
                    Some(b) => b.join(line),
                    None => yaml_dir.join(line),
                };
                out.push(ExtraModelFolder {
                    kind: kind.clone(),
                    dir: normalize(&dir),
                    is_default,
                });
            }
        }
    }
    Ok(out)
}

fn key_name(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn kind_of(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Python's `expandvars(expanduser(s))`: a leading `~` becomes `$HOME`; `$NAME` and `${NAME}`
/// become the variable's value, and stay as written when it is not set.
fn expand(s: &str) -> String {
    let s = match (s.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => s.to_string(),
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match std::env::var(name) {
            Ok(v) if !name.is_empty() => out.push_str(&v),
            _ => out.push_str(&rest[i..i + 1 + consumed]),
        }
        rest = &rest[i + 1 + consumed..];
    }
    out.push_str(rest);
    out
}

/// Python's `os.path.normpath` for absolute paths: drops `.` and folds `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_base_path_and_multiline_values() {
        let yaml = "\
comfyui:
    base_path: /opt/ComfyUI/
    is_default: true
    checkpoints: models/checkpoints/
    loras: |
        models/loras/
        ../shared/loras
a111:
    vae: rel/vae
empty:
";
        let got = parse(yaml, Path::new("/home/u/cfg")).unwrap();
        let f = |kind: &str, dir: &str, d: bool| ExtraModelFolder {
            kind: kind.into(),
            dir: dir.into(),
            is_default: d,
        };
        assert_eq!(
            got,
            vec![
                f("checkpoints", "/opt/ComfyUI/models/checkpoints", true),
                f("loras", "/opt/ComfyUI/models/loras", true),
                f("loras", "/opt/shared/loras", true),
                f("vae", "/home/u/cfg/rel/vae", false),
            ]
        );
    }

    #[test]
    fn relative_base_path_is_relative_to_the_yaml_folder() {
        let got = parse(
            "x:\n  base_path: ../ComfyUI\n  clip: models/clip\n",
            Path::new("/a/b"),
        )
        .unwrap();
        assert_eq!(got[0].dir, PathBuf::from("/a/ComfyUI/models/clip"));
        assert_eq!(got[0].kind, "clip");
    }

    #[test]
    fn shape_errors_name_the_key() {
        let e = parse("x:\n  checkpoints: [a, b]\n", Path::new("/")).unwrap_err();
        assert_eq!(
            e,
            "'x.checkpoints' must be a path or newline-separated paths (a string), found a list"
        );
        let e = parse("- a\n- b\n", Path::new("/")).unwrap_err();
        assert!(e.starts_with("the top level must be a mapping"), "{e}");
        let e = parse("x:\n  is_default: maybe\n", Path::new("/")).unwrap_err();
        assert_eq!(e, "'x.is_default' must be true or false, found a string");
        let e = parse("x: [\n", Path::new("/")).unwrap_err();
        assert!(e.starts_with("invalid YAML: "), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn expands_home_and_variables() {
        std::env::set_var("COMFYRS_TEST_EXPAND", "/v");
        assert_eq!(expand("$COMFYRS_TEST_EXPAND/x"), "/v/x");
        assert_eq!(expand("${COMFYRS_TEST_EXPAND}y"), "/vy");
        assert_eq!(
            expand("$COMFYRS_TEST_UNSET_VAR/x"),
            "$COMFYRS_TEST_UNSET_VAR/x"
        );
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(expand("~/m"), format!("{home}/m"));
        }
    }

    #[test]
    fn default_folders_come_first_and_are_not_repeated() {
        let mut p = Paths::under(Path::new("/base"));
        p.add_model_folder("checkpoints", "/x".into(), false);
        p.add_model_folder("checkpoints", "/x".into(), false);
        p.add_model_folder("checkpoints", "/d".into(), true);
        p.add_model_folder("unet", "/u".into(), false);
        assert_eq!(
            p.model_dirs("checkpoints"),
            vec![
                PathBuf::from("/d"),
                PathBuf::from("/base/models/checkpoints"),
                PathBuf::from("/x")
            ]
        );
        assert!(p
            .model_dirs("diffusion_models")
            .contains(&PathBuf::from("/u")));
        assert!(p.model_dirs("unet").contains(&PathBuf::from("/u")));
    }
}
