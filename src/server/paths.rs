//! Safe resolution of client-given file names under the input/output/temp folders: no
//! absolute paths, no `..`, and no symlink that resolves outside its folder.

use crate::env::{is_safe_relative, Environment};
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
pub enum PathError {
    /// A malformed name (empty, absolute, `..`): 400.
    BadName(String),
    /// A path that leaves its folder: 403 for /view, 400 for /upload.
    Escapes(String),
    /// 404.
    NotFound,
}

/// The folder of a ComfyUI file `type` (`output`, `input`, `temp`).
pub fn type_dir(env: &Environment, ty: &str) -> Option<PathBuf> {
    match ty {
        "output" => Some(env.paths.output.clone()),
        "input" => Some(env.paths.input.clone()),
        "temp" => Some(env.paths.temp.clone()),
        _ => None,
    }
}

/// Splits ComfyUI's annotated name (`"x.png [output]"`) into the name and forced type.
pub fn strip_annotation(name: &str) -> (&str, Option<&'static str>) {
    for ty in ["output", "input", "temp"] {
        let suffix = format!("[{ty}]");
        if let Some(rest) = name.strip_suffix(suffix.as_str()) {
            let mut cut = rest.len();
            if let Some(c) = rest.chars().last() {
                cut -= c.len_utf8();
            }
            let ty: &'static str = match ty {
                "output" => "output",
                "input" => "input",
                _ => "temp",
            };
            return (&rest[..cut], Some(ty));
        }
    }
    (name, None)
}

/// Checks a subfolder value: empty, or relative without `..`.
pub fn check_subfolder(sub: &str) -> Result<(), PathError> {
    if sub.is_empty() || is_safe_relative(sub) {
        Ok(())
    } else {
        Err(PathError::Escapes(format!(
            "subfolder '{sub}' must be a relative path inside the folder"
        )))
    }
}

/// `base/sub`, canonicalised, and only if it stays inside `base` (symlinks included). With
/// `create`, missing folders are made one component at a time, each only after the folder
/// it goes into was resolved and found inside `base`: a symlinked component never gets a
/// folder created behind it.
pub fn resolve_folder(base: &Path, sub: &str, create: bool) -> Result<PathBuf, PathError> {
    check_subfolder(sub)?;
    let base_c = base.canonicalize().map_err(|_| PathError::NotFound)?;
    let escapes = || PathError::Escapes(format!("subfolder '{sub}' resolves outside its folder"));
    let mut dir = base_c.clone();
    for part in Path::new(sub).components() {
        let std::path::Component::Normal(part) = part else {
            continue; // `.` (check_subfolder refused everything else)
        };
        check_name_length(&part.to_string_lossy())?;
        let next = dir.join(part);
        if create && std::fs::symlink_metadata(&next).is_err() {
            match std::fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::warn!("cannot create {}: {e}", next.display());
                    return Err(PathError::BadName(format!("cannot create folder '{sub}'")));
                }
            }
        }
        dir = next.canonicalize().map_err(|_| PathError::NotFound)?;
        if !dir.starts_with(&base_c) {
            return Err(escapes());
        }
    }
    if !dir.is_dir() {
        return Err(PathError::NotFound);
    }
    Ok(dir)
}

/// The longest file or folder name, in bytes (Linux's NAME_MAX; most file systems agree).
pub const NAME_MAX: usize = 255;

/// Refuses a name no file system can hold, before it reaches one.
pub fn check_name_length(name: &str) -> Result<(), PathError> {
    if name.len() > NAME_MAX {
        return Err(PathError::BadName(format!(
            "the name is {} bytes long; at most {NAME_MAX} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a file name for /view: not empty, not absolute, no `..` (ComfyUI's rule).
pub fn check_filename(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::BadName("empty filename".into()));
    }
    // Bounded before it is echoed in a message or handed to the file system.
    if name.len() > 4096 {
        return Err(PathError::BadName(format!(
            "filename is {} bytes long; at most 4096 are allowed",
            name.len()
        )));
    }
    if name.starts_with('/') || name.starts_with('\\') || name.contains("..") || has_drive(name) {
        return Err(PathError::BadName(format!(
            "filename '{name}' must not be absolute or contain '..'"
        )));
    }
    Ok(())
}

fn has_drive(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()
}

/// The last path component of `name` (ComfyUI uses only the basename).
pub fn basename(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// An existing file `base/sub/basename(name)` that resolves (symlinks followed) inside `base`.
pub fn resolve_existing_file(base: &Path, sub: &str, name: &str) -> Result<PathBuf, PathError> {
    check_filename(name)?;
    let dir = resolve_folder(base, sub, false)?;
    let file = dir.join(basename(name));
    let real = file.canonicalize().map_err(|_| PathError::NotFound)?;
    let base_c = base.canonicalize().map_err(|_| PathError::NotFound)?;
    if !real.starts_with(&base_c) {
        return Err(PathError::Escapes(format!(
            "'{name}' resolves outside its folder"
        )));
    }
    if !real.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations() {
        assert_eq!(
            strip_annotation("a.png [output]"),
            ("a.png", Some("output"))
        );
        assert_eq!(strip_annotation("a.png"), ("a.png", None));
    }

    #[test]
    fn refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("out");
        std::fs::create_dir_all(base.join("ok")).unwrap();
        std::fs::write(d.path().join("secret.txt"), "x").unwrap();
        std::fs::write(base.join("ok/a.txt"), "x").unwrap();
        assert!(resolve_existing_file(&base, "ok", "a.txt").is_ok());
        assert!(matches!(
            resolve_existing_file(&base, "", "../secret.txt"),
            Err(PathError::BadName(_))
        ));
        assert!(matches!(
            resolve_existing_file(&base, "..", "secret.txt"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve_existing_file(&base, "", "/etc/passwd"),
            Err(PathError::BadName(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.path(), base.join("link")).unwrap();
            std::os::unix::fs::symlink(d.path().join("secret.txt"), base.join("s.txt")).unwrap();
            assert!(matches!(
                resolve_existing_file(&base, "link", "secret.txt"),
                Err(PathError::Escapes(_))
            ));
            assert!(matches!(
                resolve_existing_file(&base, "", "s.txt"),
                Err(PathError::Escapes(_))
            ));
        }
    }
}
