//! ComfyUI's primitive nodes (comfy_extras/nodes_primitive.py): a widget value as an output.

use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError,
};

/// `sys.maxsize` on 64-bit Python: the bounds ComfyUI gives PrimitiveInt/PrimitiveFloat.
const PY_MAXSIZE: i64 = i64::MAX;

/// One primitive node: a class name, display name, its single `value` input and output type.
struct Primitive {
    class: &'static str,
    display: &'static str,
    ty: &'static str,
    input: fn() -> InputSpec,
}

impl Node for Primitive {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(self.class)
            .v3()
            .display(self.display)
            .category("utils/primitive")
            .module("comfy_extras.nodes_primitive")
            .input((self.input)())
            .output(OutputSpec::new(self.ty))
    }

    fn execute(&self, _ctx: &mut NodeContext, inputs: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(inputs.require("value")?.clone()))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let nodes = [
        Primitive {
            class: "PrimitiveString",
            display: "String",
            ty: "STRING",
            input: || InputSpec::string("value").multiline(false),
        },
        Primitive {
            class: "PrimitiveStringMultiline",
            display: "String (Multiline)",
            ty: "STRING",
            input: || InputSpec::string("value").multiline(true),
        },
        Primitive {
            class: "PrimitiveInt",
            display: "Int",
            ty: "INT",
            input: || {
                InputSpec::int("value")
                    .min(-PY_MAXSIZE)
                    .max(PY_MAXSIZE)
                    .opt("control_after_generate", true)
            },
        },
        Primitive {
            class: "PrimitiveFloat",
            display: "Float",
            ty: "FLOAT",
            input: || InputSpec::float("value").min(-PY_MAXSIZE).max(PY_MAXSIZE),
        },
        Primitive {
            class: "PrimitiveBoolean",
            display: "Boolean",
            ty: "BOOLEAN",
            input: || InputSpec::boolean("value"),
        },
    ];
    for n in nodes {
        r.register(n)?;
    }
    Ok(())
}
