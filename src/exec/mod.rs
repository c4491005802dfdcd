//! Running a validated prompt: cache lookup, scheduling, node calls with ComfyUI's list
//! mapping, events, interrupts and error capture.

mod cache;
mod events;
mod progress_state;
mod run;

pub use cache::{CacheEntry, CachePolicy, NodeValues, OutputCache};
pub use events::{now_ms, Event, EventLog, EventSink, NoEvents};
pub use run::{Executor, ExecutorConfig, Interrupt, RunOutcome, RunStatus};
