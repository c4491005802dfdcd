//! The set of node classes a process knows, and where each came from.
//!
//! Every class enters through the same public path: a register function
//! (`fn(&mut Registry) -> Result<(), RegistryError>`, [`RegisterFn`]). The built-in set is one
//! such function (`comfyrs::nodes::register_builtin`); a pack's is another, and it registers
//! through [`Registry::pack`] so its classes carry the pack's name. Remote nodes (an
//! out-of-process host) register the same way, as `Arc<dyn Node>`s under their pack's name.
//! This module names no node implementation: the node API does not depend on the built-ins.

use super::{Node, NodeSchema};
use crate::env::Environment;
use crate::hashing::FastIndexMap;
use serde_json::{Map, Value as Json};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("node class '{0}' is already registered")]
    Duplicate(String),
    #[error("node class '{name}': {problem}")]
    BadSchema { name: String, problem: String },
    /// A pack registered a class the core set already has (ComfyUI: core names cannot be
    /// overridden).
    #[error("node pack '{pack}' registers '{class}', a core node class; core classes cannot be overridden")]
    OverridesCore { pack: String, class: String },
    /// Two packs registered the same class name.
    #[error("node class '{class}' is registered by both pack '{first}' and pack '{second}'")]
    PackClash {
        class: String,
        first: String,
        second: String,
    },
    /// A pack's register function added a class without naming its pack.
    #[error("node class '{class}' was registered by a pack without a pack name; register pack nodes through Registry::pack(\"<pack>\")")]
    Unnamed { class: String },
}

/// A register function: the built-in set's and every pack's entry point.
pub type RegisterFn = fn(&mut Registry) -> Result<(), RegistryError>;

/// Where a class came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in set (ComfyUI's core nodes).
    Core,
    /// A node pack, by name (ComfyUI's `custom_nodes/<name>` folder).
    Pack(String),
}

impl Origin {
    fn describe(&self) -> &str {
        match self {
            Origin::Core => "core",
            Origin::Pack(p) => p,
        }
    }
}

/// A registered class: the implementation, its declaration (computed once) and its origin.
#[derive(Clone)]
pub struct NodeClass {
    pub node: Arc<dyn Node>,
    pub schema: Arc<NodeSchema>,
    pub origin: Origin,
}

/// Node classes by name, in registration order.
#[derive(Clone, Default)]
pub struct Registry {
    classes: FastIndexMap<String, NodeClass>,
    /// Set while [`Registry::load`] runs pack functions: a class registered then without a
    /// pack name is refused.
    loading_packs: bool,
}

/// Registers classes under one pack's name (see [`Registry::pack`]).
pub struct PackRegistrar<'r> {
    registry: &'r mut Registry,
    pack: String,
}

impl PackRegistrar<'_> {
    /// The pack's name, as in `python_module: "custom_nodes.<name>"`.
    pub fn name(&self) -> &str {
        &self.pack
    }

    pub fn register(&mut self, node: impl Node) -> Result<(), RegistryError> {
        self.register_arc(Arc::new(node))
    }

    pub fn register_arc(&mut self, node: Arc<dyn Node>) -> Result<(), RegistryError> {
        self.registry.insert(node, Origin::Pack(self.pack.clone()))
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// The core set (`core`, e.g. `comfyrs::nodes::register_builtin`), then each pack in
    /// order. A clash is an error naming both sides.
    pub fn load(core: RegisterFn, packs: &[RegisterFn]) -> Result<Self, RegistryError> {
        let mut r = Registry::new();
        core(&mut r)?;
        r.loading_packs = true;
        let result = packs.iter().try_for_each(|register| register(&mut r));
        r.loading_packs = false;
        result.map(|()| r)
    }

    /// Registers a node class as core (the built-in set, tests, the server's dev nodes).
    /// Names must be unique; a schema must not declare an input twice.
    pub fn register(&mut self, node: impl Node) -> Result<(), RegistryError> {
        self.register_arc(Arc::new(node))
    }

    pub fn register_arc(&mut self, node: Arc<dyn Node>) -> Result<(), RegistryError> {
        if self.loading_packs {
            return Err(RegistryError::Unnamed {
                class: node.schema().name,
            });
        }
        self.insert(node, Origin::Core)
    }

    /// A registrar for one pack: its classes get `python_module: "custom_nodes.<pack>"` and
    /// may not reuse a core class name or another pack's.
    pub fn pack(&mut self, pack: &str) -> PackRegistrar<'_> {
        PackRegistrar {
            registry: self,
            pack: pack.to_string(),
        }
    }

    fn insert(&mut self, node: Arc<dyn Node>, origin: Origin) -> Result<(), RegistryError> {
        let mut schema = node.schema();
        if let Some(existing) = self.classes.get(&schema.name) {
            return Err(match (&existing.origin, &origin) {
                (Origin::Core, Origin::Core) => RegistryError::Duplicate(schema.name),
                (Origin::Core, Origin::Pack(pack)) => RegistryError::OverridesCore {
                    pack: pack.clone(),
                    class: schema.name,
                },
                (first, second) => RegistryError::PackClash {
                    class: schema.name,
                    first: first.describe().to_string(),
                    second: second.describe().to_string(),
                },
            });
        }
        for (i, input) in schema.inputs.iter().enumerate() {
            if schema.inputs[..i].iter().any(|o| o.name == input.name) {
                return Err(RegistryError::BadSchema {
                    name: schema.name.clone(),
                    problem: format!("input '{}' declared twice", input.name),
                });
            }
        }
        if let Origin::Pack(pack) = &origin {
            schema.python_module = format!("custom_nodes.{pack}");
        }
        self.classes.insert(
            schema.name.clone(),
            NodeClass {
                node,
                schema: Arc::new(schema),
                origin,
            },
        );
        Ok(())
    }

    pub fn get(&self, class_type: &str) -> Option<&NodeClass> {
        self.classes.get(class_type)
    }

    pub fn schema(&self, class_type: &str) -> Option<&NodeSchema> {
        self.classes.get(class_type).map(|c| c.schema.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// ComfyUI's `GET /object_info` body: every class's info, combos computed now.
    pub fn object_info(&self, env: &Environment) -> Json {
        let mut out = Map::new();
        for (name, class) in &self.classes {
            out.insert(name.clone(), class.schema.object_info(env));
        }
        Json::Object(out)
    }
}
