//! The executor proper.
//!
//! One run: plan against the cache, replay `execution_cached`, then release nodes in
//! dependency order (ties broken by ComfyUI's output-first heuristic) to `workers` threads.
//! A node error or panic ends the run as `execution_error`; an interrupt as
//! `execution_interrupted`. A node with lazy inputs is asked which of them it needs before it
//! runs (ComfyUI's `check_lazy_status`); their producers are scheduled then, so the branches
//! it does not choose never run. Nodes that finished keep their cache entries, so the next run
//! resumes from there.

use super::cache::{CacheEntry, CachePolicy, NodeValues, OutputCache};
use super::events::{now_ms, Event, EventSink};
use super::progress_state::ProgressStates;
use crate::env::Environment;
use crate::graph::{plan, strong_links, ExecGraph, GraphInput, GraphNode, ValidPrompt};
use crate::node::{Inputs, NodeContext, NodeError, ProgressSink, Registry, Value};
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::{json, Map, Value as Json};
use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A cooperative stop signal for the running prompt.
#[derive(Clone, Default, Debug)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn new() -> Self {
        Interrupt::default()
    }
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub cache: CachePolicy,
    /// Nodes that may run at once (independent branches). 1 runs everything on the calling
    /// thread in ComfyUI's order.
    pub workers: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            cache: CachePolicy::Classic,
            workers: 1,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Success,
    /// The `execution_error` payload.
    Error(Json),
    /// The `execution_interrupted` payload.
    Interrupted(Json),
}

/// What a run produced: the UI outputs by node id (history's `outputs`), the messages history
/// records, and which nodes executed or came from the cache.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub outputs: IndexMap<String, Json>,
    pub messages: Vec<(String, Json)>,
    /// Nodes whose function ran, in completion order.
    pub executed: Vec<String>,
    /// Nodes whose output came from the cache (ComfyUI's `execution_cached` list).
    pub cached: Vec<String>,
}

impl RunOutcome {
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Success
    }
}

/// Per-(node id, class) state kept across runs (ComfyUI's node instances).
type InstanceState = Option<Box<dyn Any + Send>>;

/// Runs prompts. One per process: it owns the output cache and node instance state.
pub struct Executor {
    registry: Arc<Registry>,
    env: Arc<Environment>,
    cache: Mutex<OutputCache>,
    instances: Mutex<HashMap<(String, String), InstanceState>>,
    workers: usize,
}

/// Everything the worker threads share during one run.
struct Shared<'a> {
    state: Mutex<SchedState>,
    wake: Condvar,
    prompt: &'a ValidPrompt,
    prompt_id: &'a str,
    extra_pnginfo: Option<&'a Json>,
    rank: &'a [(u8, usize)],
    interrupt: &'a Interrupt,
    events: &'a dyn EventSink,
    /// What `progress_state` reports.
    progress: ProgressStates<'a>,
}

struct SchedState {
    ready: BinaryHeap<Reverse<((u8, usize), usize)>>,
    /// Nodes this run executes or replays (the plan's, plus producers of lazy inputs asked for).
    scheduled: Vec<bool>,
    /// Producers each node still waits for.
    waiting: Vec<usize>,
    /// The nodes each producer blocks (released when it finishes).
    blocks: Vec<Vec<usize>>,
    values: Vec<Option<Arc<NodeValues>>>,
    remaining: usize,
    running: usize,
    failure: Option<Failure>,
    executed: Vec<String>,
    outputs: IndexMap<String, Json>,
    /// New cache entries made by this run.
    new_entries: Vec<(usize, CacheEntry)>,
}

enum Failure {
    Error(Json),
    Interrupted(Json),
}

struct EventProgress<'a> {
    prompt_id: &'a str,
    events: &'a dyn EventSink,
    states: &'a ProgressStates<'a>,
}

impl ProgressSink for EventProgress<'_> {
    fn message(&self, _node_id: &str, event: &str, data: Json, broadcast: bool) {
        self.events.emit(Event::Custom {
            prompt_id: self.prompt_id.to_string(),
            event: event.to_string(),
            data,
            broadcast,
        });
    }

    fn progress(
        &self,
        node_id: &str,
        value: u64,
        max: u64,
        preview: Option<crate::node::PreviewImage>,
    ) {
        // ComfyUI's order: the updated progress_state, the preview, then `progress`.
        self.states.update(node_id, value, max, self.events);
        if let Some(image) = preview {
            self.events.emit(Event::Preview {
                prompt_id: self.prompt_id.to_string(),
                node: node_id.to_string(),
                image,
            });
        }
        self.events.emit(Event::Progress {
            prompt_id: self.prompt_id.to_string(),
            node: node_id.to_string(),
            value,
            max,
        });
    }
}

impl Executor {
    pub fn new(registry: Arc<Registry>, env: Arc<Environment>, config: ExecutorConfig) -> Self {
        Executor {
            registry,
            env,
            cache: Mutex::new(OutputCache::new(config.cache)),
            instances: Mutex::new(HashMap::new()),
            workers: config.workers.max(1),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn env(&self) -> &Arc<Environment> {
        &self.env
    }

    /// Entry count and bytes held by the output cache.
    pub fn cache_stats(&self) -> (usize, usize) {
        let c = self.lock_cache();
        (c.len(), c.bytes())
    }

    /// Drops every cached output (POST /free with free_memory).
    pub fn clear_cache(&self) {
        self.lock_cache().clear();
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, OutputCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a validated prompt to the end, on the calling thread (plus `workers - 1` helpers).
    /// Blocking: async callers use `tokio::task::spawn_blocking`.
    pub fn run(
        &self,
        prompt_id: &str,
        prompt: &ValidPrompt,
        extra_pnginfo: Option<&Json>,
        interrupt: &Interrupt,
        events: &dyn EventSink,
    ) -> RunOutcome {
        let mut messages = Vec::new();
        let emit = |e: Event, messages: &mut Vec<(String, Json)>| {
            if e.goes_in_history() {
                messages.push((e.kind().to_string(), e.data()));
            }
            events.emit(e);
        };
        emit(
            Event::ExecutionStart {
                prompt_id: prompt_id.to_string(),
                timestamp: now_ms(),
            },
            &mut messages,
        );

        let g = &prompt.graph.graph;
        let n = g.node_count();
        // Plan against the cache, and pin the cached values this run will read.
        let (plan, cached_values, cached_ui, cached_ids) = {
            let mut cache = self.lock_cache();
            let plan = plan(&prompt.graph, &self.env, |s| cache.contains(s));
            let used: HashSet<[u8; 32]> = plan.signatures.iter().copied().collect();
            cache.begin_prompt(&used);
            let mut values = vec![None; n];
            let mut ui = vec![None; n];
            let mut ids = Vec::new();
            for ix in g.node_indices() {
                if let Some(entry) = cache.get(&plan.signatures[ix.index()]) {
                    values[ix.index()] = Some(entry.values);
                    ui[ix.index()] = Some(entry.ui);
                    ids.push(g[ix].id.clone());
                }
            }
            (plan, values, ui, ids)
        };
        emit(
            Event::ExecutionCached {
                prompt_id: prompt_id.to_string(),
                nodes: cached_ids.clone(),
                timestamp: now_ms(),
            },
            &mut messages,
        );

        // Release order: scheduled nodes become ready when the producers they need finish.
        let mut waiting = vec![0usize; n];
        let mut blocks = vec![Vec::new(); n];
        let mut ready = BinaryHeap::new();
        for ix in plan.scheduled_nodes() {
            let i = ix.index();
            if cached_values[i].is_none() {
                for p in pending_producers(&prompt.graph, ix, &cached_values) {
                    blocks[p].push(i);
                    waiting[i] += 1;
                }
            }
            if waiting[i] == 0 {
                ready.push(Reverse((plan.rank[i], i)));
            }
        }
        let remaining = plan.scheduled.iter().filter(|s| **s).count();
        let shared = Shared {
            state: Mutex::new(SchedState {
                ready,
                scheduled: plan.scheduled.clone(),
                waiting,
                blocks,
                values: cached_values,
                remaining,
                running: 0,
                failure: None,
                executed: Vec::new(),
                outputs: IndexMap::new(),
                new_entries: Vec::new(),
            }),
            wake: Condvar::new(),
            prompt,
            prompt_id,
            extra_pnginfo,
            rank: &plan.rank,
            interrupt,
            events,
            progress: ProgressStates::new(prompt_id),
        };
        let replay_ui = cached_ui;
        if self.workers == 1 {
            self.worker(&shared, &replay_ui);
        } else {
            std::thread::scope(|s| {
                for _ in 0..self.workers {
                    s.spawn(|| self.worker(&shared, &replay_ui));
                }
            });
        }

        let mut state = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
        // Nodes left that could never start would be a scheduling bug: never report such a
        // run as a success with outputs missing.
        if state.failure.is_none() && state.remaining > 0 {
            let stuck: Vec<&GraphNode> = (0..n)
                .filter(|&i| state.scheduled[i] && state.values[i].is_none())
                .map(|i| &g[NodeIndex::new(i)])
                .collect();
            let ids: Vec<&str> = stuck.iter().map(|node| node.id.as_str()).collect();
            state.failure = Some(Failure::Error(json!({
                "prompt_id": prompt_id, "node_id": ids.first().copied().unwrap_or(""),
                "node_type": stuck.first().map(|node| node.class_type()).unwrap_or(""),
                "executed": state.executed,
                "exception_message": format!(
                    "internal error: node(s) {} never became ready to run\n",
                    ids.join(", ")
                ),
                "exception_type": "RuntimeError", "traceback": [], "current_inputs": {},
                "current_outputs": [], "timestamp": now_ms(),
            })));
        }
        {
            let mut cache = self.lock_cache();
            for (i, entry) in state.new_entries {
                cache.insert(plan.signatures[i], entry);
            }
        }
        let status = match state.failure {
            None => {
                emit(
                    Event::ExecutionSuccess {
                        prompt_id: prompt_id.to_string(),
                        timestamp: now_ms(),
                    },
                    &mut messages,
                );
                RunStatus::Success
            }
            Some(Failure::Error(data)) => {
                emit(
                    Event::ExecutionError {
                        prompt_id: prompt_id.to_string(),
                        data: data.clone(),
                    },
                    &mut messages,
                );
                RunStatus::Error(data)
            }
            Some(Failure::Interrupted(data)) => {
                emit(
                    Event::ExecutionInterrupted {
                        prompt_id: prompt_id.to_string(),
                        data: data.clone(),
                    },
                    &mut messages,
                );
                RunStatus::Interrupted(data)
            }
        };
        RunOutcome {
            status,
            outputs: state.outputs,
            messages,
            executed: state.executed,
            cached: cached_ids,
        }
    }

    /// One worker: takes the best ready node, runs it, releases its consumers; until the run
    /// is done or has failed.
    fn worker(&self, sh: &Shared, replay_ui: &[Option<Option<Json>>]) {
        let g = &sh.prompt.graph.graph;
        let mut guard = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if guard.failure.is_some() || guard.remaining == 0 {
                break;
            }
            let Some(Reverse((_, i))) = guard.ready.pop() else {
                if guard.running == 0 {
                    break; // nothing can become ready any more
                }
                guard = sh.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let ix = NodeIndex::new(i);
            let node = &g[ix];

            // A cached output node: replay its UI, nothing runs.
            if let (Some(_), Some(ui)) = (&guard.values[i], &replay_ui[i]) {
                if let Some(ui) = ui {
                    guard.outputs.insert(node.id.clone(), ui.clone());
                }
                sh.events.emit(Event::Executed {
                    prompt_id: sh.prompt_id.to_string(),
                    node: node.id.clone(),
                    output: ui.clone(),
                });
                sh.progress.finish(&node.id, sh.events);
                guard.remaining -= 1;
                continue;
            }

            // Gather input lists while holding the lock (cheap Arc clones). A lazy input whose
            // producer has not run is left out.
            let mut lists: Vec<(String, Vec<Value>)> = Vec::with_capacity(node.inputs.len());
            let mut has_lazy = false;
            for (decl, input) in &node.inputs {
                let lazy = node.class.schema.inputs[*decl].is_lazy();
                has_lazy |= lazy;
                let list = match input {
                    GraphInput::Literal(v) => vec![v.clone()],
                    GraphInput::Link { source, slot } => {
                        match guard.values[source.index()].as_ref() {
                            Some(vals) => vals.get(*slot).cloned().unwrap_or_default(),
                            None if lazy => continue,
                            None => Vec::new(),
                        }
                    }
                };
                lists.push((node.input_name(*decl).to_string(), list));
            }
            guard.running += 1;
            drop(guard);

            let result = if sh.interrupt.is_triggered() {
                Err(NodeError::Interrupted)
            } else {
                sh.progress.start(&node.id, sh.events);
                sh.events.emit(Event::Executing {
                    prompt_id: sh.prompt_id.to_string(),
                    node: Some(node.id.clone()),
                });
                if has_lazy {
                    self.lazy_inputs_needed(sh, ix, &lists).map(Some)
                } else {
                    Ok(None)
                }
            };
            // The node asked for lazy inputs that have not run: schedule their producers and
            // wait for them; it is asked again once they are done.
            let result = match result {
                Ok(Some(needed)) if !needed.is_empty() => {
                    guard = sh.state.lock().unwrap_or_else(|e| e.into_inner());
                    guard.running -= 1;
                    for p in needed {
                        if guard.values[p].is_some() {
                            continue; // finished meanwhile
                        }
                        schedule_with_producers(&mut guard, &sh.prompt.graph, p, sh.rank);
                        guard.blocks[p].push(i);
                        guard.waiting[i] += 1;
                    }
                    if guard.waiting[i] == 0 {
                        guard.ready.push(Reverse((sh.rank[i], i)));
                    }
                    sh.wake.notify_all();
                    continue;
                }
                Ok(_) => self.call_node(sh, ix, &lists),
                Err(e) => Err(e),
            };

            guard = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            guard.running -= 1;
            match result {
                Ok((values, ui)) => {
                    if let Some(ui) = &ui {
                        guard
                            .outputs
                            .insert(node.id.clone(), Json::Object(ui.clone()));
                        sh.events.emit(Event::Executed {
                            prompt_id: sh.prompt_id.to_string(),
                            node: node.id.clone(),
                            output: Some(Json::Object(ui.clone())),
                        });
                    }
                    sh.progress.finish(&node.id, sh.events);
                    let entry = CacheEntry::new(values, ui.map(Json::Object));
                    guard.values[i] = Some(Arc::clone(&entry.values));
                    guard.new_entries.push((i, entry));
                    guard.executed.push(node.id.clone());
                    guard.remaining -= 1;
                    for c in std::mem::take(&mut guard.blocks[i]) {
                        guard.waiting[c] -= 1;
                        if guard.waiting[c] == 0 {
                            guard.ready.push(Reverse((sh.rank[c], c)));
                        }
                    }
                }
                Err(e) => {
                    let executed = guard.executed.clone();
                    let failure = failure_payload(
                        sh,
                        node.id.as_str(),
                        node.class_type(),
                        &lists,
                        executed,
                        e,
                    );
                    if guard.failure.is_none() {
                        guard.failure = Some(failure);
                    }
                }
            }
            sh.wake.notify_all();
        }
        sh.wake.notify_all();
    }

    /// Runs `f` on the node once per call of its input lists (ComfyUI's mapping over lists),
    /// with its per-node state, a context and panics turned into node errors; stops at the
    /// first error or an interrupt. Shared by `execute` and `check_lazy_status`.
    fn map_over_calls(
        &self,
        sh: &Shared,
        ix: NodeIndex,
        lists: &[(String, Vec<Value>)],
        mut f: impl FnMut(&mut NodeContext, &Inputs) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let node = &sh.prompt.graph.graph[ix];
        let schema = &node.class.schema;
        let calls = calls_over_lists(schema.input_is_list, lists)?;
        let key = (node.id.clone(), schema.name.clone());
        let mut state: InstanceState = self
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .flatten();
        let progress = EventProgress {
            prompt_id: sh.prompt_id,
            events: sh.events,
            states: &sh.progress,
        };
        let mut result = Ok(());
        for inputs in &calls {
            if sh.interrupt.is_triggered() {
                result = Err(NodeError::Interrupted);
                break;
            }
            let mut ctx = NodeContext {
                node_id: &node.id,
                class_type: &schema.name,
                prompt_id: sh.prompt_id,
                env: &self.env,
                prompt: &sh.prompt.prompt,
                extra_pnginfo: sh.extra_pnginfo,
                state: &mut state,
                interrupt: &sh.interrupt.0,
                progress: &progress,
            };
            result = catch_unwind(AssertUnwindSafe(|| f(&mut ctx, inputs)))
                .unwrap_or_else(|panic| Err(panic_error(panic)));
            if result.is_err() {
                break;
            }
        }
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, state);
        result
    }

    /// Calls a node once per list element (or once with whole lists) and merges the
    /// per-call results per output slot.
    fn call_node(
        &self,
        sh: &Shared,
        ix: NodeIndex,
        lists: &[(String, Vec<Value>)],
    ) -> Result<(NodeValues, Option<Map<String, Json>>), NodeError> {
        let node = &sh.prompt.graph.graph[ix];
        let schema = &node.class.schema;
        let mut slots: NodeValues = vec![Vec::new(); schema.outputs.len()];
        let mut ui: Option<Map<String, Json>> = None;
        self.map_over_calls(sh, ix, lists, |ctx, inputs| {
            let out = node.class.node.execute(ctx, inputs)?;
            if out.values.len() != schema.outputs.len() {
                return Err(NodeError::msg(format!(
                    "{} returned {} value(s) but declares {} output(s)",
                    schema.name,
                    out.values.len(),
                    schema.outputs.len()
                )));
            }
            for (k, v) in out.values.into_iter().enumerate() {
                match (schema.outputs[k].is_list, v) {
                    (true, Value::List(items)) => slots[k].extend(items),
                    (_, v) => slots[k].push(v),
                }
            }
            if let Some(call_ui) = out.ui {
                merge_ui(&mut ui, call_ui);
            }
            Ok(())
        })?;
        Ok((slots, ui))
    }

    /// Asks a node with lazy inputs which of them it needs (once per list element, as
    /// ComfyUI maps `check_lazy_status`) and returns the producers of those that have not run.
    /// Names of inputs that are literals or already computed are dropped; a name the node
    /// has no input for is an error, as in ComfyUI.
    fn lazy_inputs_needed(
        &self,
        sh: &Shared,
        ix: NodeIndex,
        lists: &[(String, Vec<Value>)],
    ) -> Result<Vec<usize>, NodeError> {
        let node = &sh.prompt.graph.graph[ix];
        let mut names: Vec<String> = Vec::new();
        self.map_over_calls(sh, ix, lists, |ctx, inputs| {
            names.extend(node.class.node.check_lazy_status(ctx, inputs)?);
            Ok(())
        })?;

        let guard = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut producers = Vec::new();
        for name in names {
            let Some((_, input)) = node.named_inputs().find(|(n, _)| *n == name) else {
                return Err(NodeError::Failed {
                    message: format!(
                        "Node {} says it needs input {name}, but there is no input to that node \
                         at all",
                        node.id
                    ),
                    exception_type: "comfy_execution.graph.NodeInputError".into(),
                });
            };
            if let GraphInput::Link { source, .. } = input {
                let p = source.index();
                if guard.values[p].is_none() && !producers.contains(&p) {
                    producers.push(p);
                }
            }
        }
        Ok(producers)
    }
}

/// The producers of `ix`'s non-lazy links whose values are not there yet, each once.
fn pending_producers(
    graph: &ExecGraph,
    ix: NodeIndex,
    values: &[Option<Arc<NodeValues>>],
) -> Vec<usize> {
    let mut producers: Vec<usize> = strong_links(&graph.graph[ix])
        .map(|(source, _)| source.index())
        .filter(|&p| values[p].is_none())
        .collect();
    producers.sort_unstable();
    producers.dedup();
    producers
}

/// Adds `start` and the producers it needs (transitively, stopping at nodes that already have
/// values or are scheduled) to a running run: a lazy input was asked for.
fn schedule_with_producers(
    st: &mut SchedState,
    graph: &ExecGraph,
    start: usize,
    rank: &[(u8, usize)],
) {
    let mut stack = vec![start];
    while let Some(x) = stack.pop() {
        if st.scheduled[x] || st.values[x].is_some() {
            continue;
        }
        st.scheduled[x] = true;
        st.remaining += 1;
        for p in pending_producers(graph, NodeIndex::new(x), &st.values) {
            st.blocks[p].push(x);
            st.waiting[x] += 1;
            stack.push(p);
        }
        if st.waiting[x] == 0 {
            st.ready.push(Reverse((rank[x], x)));
        }
    }
}

/// The calls a node gets: once with whole lists (`input_is_list`), else once per element of
/// the longest list, shorter lists repeating their last element (ComfyUI's mapping).
fn calls_over_lists(
    input_is_list: bool,
    lists: &[(String, Vec<Value>)],
) -> Result<Vec<Inputs>, NodeError> {
    if input_is_list {
        return Ok(vec![Inputs::new(
            lists
                .iter()
                .map(|(k, v)| (k.clone(), Value::List(v.clone())))
                .collect(),
        )]);
    }
    if let Some((name, _)) = lists.iter().find(|(_, l)| l.is_empty()) {
        return Err(NodeError::input(name, "the linked output is an empty list"));
    }
    let count = lists.iter().map(|(_, l)| l.len()).max().unwrap_or(1);
    Ok((0..count)
        .map(|c| {
            Inputs::new(
                lists
                    .iter()
                    .map(|(k, l)| (k.clone(), l[c.min(l.len() - 1)].clone()))
                    .collect(),
            )
        })
        .collect())
}

/// A panic caught around node code, as a node error.
fn panic_error(panic: Box<dyn Any + Send>) -> NodeError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    NodeError::Failed {
        message: format!("node panicked: {msg}"),
        exception_type: "Panic".into(),
    }
}

/// Merges one call's UI dict into the node's: keys from the first dict, lists concatenated.
fn merge_ui(acc: &mut Option<Map<String, Json>>, call: Map<String, Json>) {
    match acc {
        None => *acc = Some(call),
        Some(acc) => {
            let keys: Vec<String> = acc.keys().cloned().collect();
            for k in keys {
                if let (Some(Json::Array(dst)), Some(Json::Array(src))) =
                    (acc.get_mut(&k), call.get(&k))
                {
                    dst.extend(src.iter().cloned());
                }
            }
        }
    }
}

fn failure_payload(
    sh: &Shared,
    node_id: &str,
    class_type: &str,
    lists: &[(String, Vec<Value>)],
    executed: Vec<String>,
    e: NodeError,
) -> Failure {
    match e {
        NodeError::Interrupted => Failure::Interrupted(json!({
            "prompt_id": sh.prompt_id, "node_id": node_id, "node_type": class_type,
            "executed": executed, "timestamp": now_ms(),
        })),
        NodeError::Failed {
            message,
            exception_type,
        } => {
            let current_inputs: Map<String, Json> = lists
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        Json::Array(l.iter().map(Value::to_report_json).collect()),
                    )
                })
                .collect();
            let current_outputs: Vec<&str> = sh
                .prompt
                .graph
                .graph
                .node_indices()
                .map(|ix| sh.prompt.graph.graph[ix].id.as_str())
                .collect();
            // ComfyUI formats a node's exception as "{exception}\n{tips}" (tips: an
            // out-of-memory hint, else empty), so the message ends with a newline.
            let message = format!("{message}\n");
            Failure::Error(json!({
                "prompt_id": sh.prompt_id, "node_id": node_id, "node_type": class_type,
                "executed": executed, "exception_message": message, "exception_type": exception_type,
                "traceback": [], "current_inputs": current_inputs, "current_outputs": current_outputs,
                "timestamp": now_ms(),
            }))
        }
    }
}
