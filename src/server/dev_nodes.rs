//! Test-only nodes, registered by `comfyrs serve --dev-nodes` (hidden flag) so end-to-end tests
//! of the real binary have a job that is slow enough to interrupt or kill.

use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use serde_json::{json, Map};

/// `DevSleep`: waits `ms` milliseconds (checking for interrupts and reporting progress every
/// 10 ms), then shows and returns `text`.
pub struct DevSleep;

impl Node for DevSleep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DevSleep")
            .display("Sleep (dev)")
            .category("_dev")
            .input(InputSpec::int("ms").default(100).min(0).max(3_600_000))
            .input(InputSpec::string("text").default(""))
            .output(OutputSpec::new("STRING"))
            .output_node()
    }

    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let ms = i.int("ms")?.max(0) as u64;
        let text = i.string("text")?.to_string();
        let start = std::time::Instant::now();
        let steps = ms.div_ceil(10).max(1);
        for step in 0..steps {
            ctx.check_interrupt()?;
            let target = std::time::Duration::from_millis(ms * (step + 1) / steps);
            if let Some(left) = target.checked_sub(start.elapsed()) {
                std::thread::sleep(left);
            }
            ctx.progress(step + 1, steps)?;
        }
        let mut ui = Map::new();
        ui.insert("text".into(), json!([text]));
        Ok(NodeOutput::one(Value::String(text)).with_ui(ui))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(DevSleep)
}
