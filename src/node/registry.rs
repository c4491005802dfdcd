//! The set of node classes a process knows: built-ins plus whatever node packs register.

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
}

/// A registered class: the implementation and its declaration, computed once.
#[derive(Clone)]
pub struct NodeClass {
    pub node: Arc<dyn Node>,
    pub schema: Arc<NodeSchema>,
}

/// Node classes by name, in registration order.
#[derive(Clone, Default)]
pub struct Registry {
    classes: FastIndexMap<String, NodeClass>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry holding every built-in node.
    pub fn with_builtin_nodes() -> Self {
        let mut r = Registry::new();
        crate::nodes::register_builtin(&mut r).expect("built-in node schemas are valid");
        r
    }

    /// Adds a node class. Names must be unique; a schema must not declare an input twice.
    pub fn register(&mut self, node: impl Node) -> Result<(), RegistryError> {
        self.register_arc(Arc::new(node))
    }

    pub fn register_arc(&mut self, node: Arc<dyn Node>) -> Result<(), RegistryError> {
        let schema = node.schema();
        if self.classes.contains_key(&schema.name) {
            return Err(RegistryError::Duplicate(schema.name));
        }
        for (i, input) in schema.inputs.iter().enumerate() {
            if schema.inputs[..i].iter().any(|o| o.name == input.name) {
                return Err(RegistryError::BadSchema {
                    name: schema.name.clone(),
                    problem: format!("input '{}' declared twice", input.name),
                });
            }
        }
        self.classes.insert(
            schema.name.clone(),
            NodeClass {
                node,
                schema: Arc::new(schema),
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
