//! Where a run finds and puts files (models, input, output, temp), and the shared services
//! nodes use across runs (e.g. loaded-model caches), kept in a type map so node packs can add
//! their own without touching the executor.

use crate::compute::Compute;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File extensions ComfyUI lists in model folders.
pub const MODEL_EXTENSIONS: &[&str] = &[
    "ckpt",
    "pt",
    "pt2",
    "bin",
    "pth",
    "safetensors",
    "pkl",
    "sft",
];

/// The directories of one comfyrs installation.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Model roots, searched in order (the models dir, then extra_model_paths.yaml entries).
    pub model_roots: Vec<PathBuf>,
    /// Extra folders per model kind (from extra_model_paths.yaml), searched after the roots.
    pub extra_model_dirs: HashMap<String, Vec<PathBuf>>,
    /// Folders per model kind searched before the roots (extra_model_paths.yaml entries with
    /// `is_default: true`; the latest added comes first, like ComfyUI's insert at 0).
    pub default_model_dirs: HashMap<String, Vec<PathBuf>>,
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
}

impl Paths {
    /// The ComfyUI layout under one base directory: `models/`, `input/`, `output/`, `temp/`.
    pub fn under(base: &Path) -> Paths {
        Paths {
            model_roots: vec![base.join("models")],
            extra_model_dirs: HashMap::new(),
            default_model_dirs: HashMap::new(),
            input: base.join("input"),
            output: base.join("output"),
            temp: base.join("temp"),
        }
    }

    /// Folder names ComfyUI treats as the same kind (`clip` is also `text_encoders`, `unet` is
    /// also `diffusion_models`).
    fn folder_aliases(kind: &str) -> &[&str] {
        match kind {
            "clip" | "text_encoders" => &["text_encoders", "clip"],
            "unet" | "diffusion_models" => &["diffusion_models", "unet"],
            _ => &[],
        }
    }

    /// Every directory that holds models of `kind` (`checkpoints`, `loras`, ...), in search order.
    pub fn model_dirs(&self, kind: &str) -> Vec<PathBuf> {
        let aliases = Self::folder_aliases(kind);
        let names: Vec<&str> = if aliases.is_empty() {
            vec![kind]
        } else {
            aliases.to_vec()
        };
        let mut dirs = Vec::new();
        for n in &names {
            if let Some(front) = self.default_model_dirs.get(*n) {
                dirs.extend(front.iter().cloned());
            }
        }
        for root in &self.model_roots {
            for n in &names {
                dirs.push(root.join(n));
            }
        }
        for n in &names {
            if let Some(extra) = self.extra_model_dirs.get(*n) {
                dirs.extend(extra.iter().cloned());
            }
        }
        dirs
    }

    /// Adds a folder for models of `kind` (ComfyUI's `add_model_folder_path`): appended after
    /// the roots, or put in front of everything when `is_default`. Legacy names are mapped
    /// (`clip` → `text_encoders`, `unet` → `diffusion_models`); a folder already searched stays
    /// where it is unless `is_default` moves it to the front.
    pub fn add_model_folder(&mut self, kind: &str, dir: PathBuf, is_default: bool) {
        let kind = match kind {
            "clip" => "text_encoders",
            "unet" => "diffusion_models",
            k => k,
        };
        if is_default {
            for map in [&mut self.default_model_dirs, &mut self.extra_model_dirs] {
                if let Some(list) = map.get_mut(kind) {
                    list.retain(|d| d != &dir);
                }
            }
            self.default_model_dirs
                .entry(kind.to_string())
                .or_default()
                .insert(0, dir);
        } else if !self.model_dirs(kind).contains(&dir) {
            self.extra_model_dirs
                .entry(kind.to_string())
                .or_default()
                .push(dir);
        }
    }

    /// Model files of `kind`, as names relative to their folder (with `/` separators), sorted and
    /// de-duplicated: the combo choices of loader nodes.
    pub fn list_models(&self, kind: &str) -> Vec<String> {
        let mut names = Vec::new();
        for dir in self.model_dirs(kind) {
            collect_files(&dir, &mut names, &|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| MODEL_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            });
        }
        names.sort();
        names.dedup();
        names
    }

    /// The file a model name refers to, if it exists in any folder of `kind`. Names that would
    /// leave the folder (absolute, `..`) are never resolved.
    pub fn find_model(&self, kind: &str, name: &str) -> Option<PathBuf> {
        if !is_safe_relative(name) {
            return None;
        }
        self.model_dirs(kind)
            .into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }
}

/// True for a relative path with no `..`, root or prefix components.
pub fn is_safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// Files under `root` that `keep` accepts, as `/`-separated paths relative to `root`.
fn collect_files(root: &Path, out: &mut Vec<String>, keep: &dyn Fn(&Path) -> bool) {
    // An explicit stack: folder depth never turns into recursion depth.
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if keep(&path) {
                if let Ok(rel) = path.strip_prefix(root) {
                    let name = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push(name);
                }
            }
        }
    }
}

/// Shared services keyed by type: a node pack stores its caches here.
#[derive(Default)]
pub struct Resources {
    map: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Resources {
    /// The shared instance of `T`, created with `Default` on first use.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>);
        Arc::clone(entry)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("keyed by TypeId"))
    }

    /// Drops every shared service (POST /free with unload_models).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Everything a node may read about its installation.
pub struct Environment {
    pub paths: Paths,
    pub resources: Resources,
    /// The device and dtypes model loaders use (CPU f32 unless configured).
    pub compute: Compute,
    /// Whether and how samplers draw latent previews (`--preview-method`; off by default).
    pub previews: crate::sampling::preview::PreviewSettings,
}

impl Environment {
    pub fn new(paths: Paths) -> Self {
        Environment {
            paths,
            resources: Resources::default(),
            compute: Compute::default(),
            previews: Default::default(),
        }
    }

    /// The same environment with models loaded to `compute`'s device and dtypes.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("paths", &self.paths)
            .field("compute", &self.compute.describe())
            .finish()
    }
}
