//! Built-in nodes, one file per family. Adding a node means adding it to its family's file
//! (and that file's `register`), nothing else.

pub mod image_io;
mod primitives;
mod strings;
mod utils;

use crate::node::{Registry, RegistryError};

/// Registers every built-in node.
pub fn register_builtin(r: &mut Registry) -> Result<(), RegistryError> {
    image_io::register(r)?;
    primitives::register(r)?;
    strings::register(r)?;
    utils::register(r)?;
    Ok(())
}
