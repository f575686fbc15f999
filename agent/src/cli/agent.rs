//! `palisade agent`: run the node agent from manifests or the Kubernetes API.
//!
//! Each round brings the model up to the source (the API source patches
//! it from its watch events and names the changes; manifests are read
//! whole and diffed), has the incremental compiler apply the changes,
//! finds the pod interfaces and has the datapath apply the difference.
//! Rounds run at start, when the input changes (polled fingerprint of the
//! manifests, or settled watch events of the API) and when the host routes
//! change (pods appearing or going: woken by netlink link and route events,
//! polled as a fallback). SIGTERM and SIGINT end the agent and leave every
//! pin in place: enforcement continues and the next agent re-adopts it.
//!
//! Beside the rounds, a thread serves the verdict stream (`crate::monitor`)
//! and `/metrics` reads the classifiers' counters at scrape time
//! (`datapath_metrics`); each round publishes the view of the node they
//! decode with. `--audit` puts every policy of every model in audit mode.

mod attachments;
mod datapath_metrics;
mod health;
mod http;
mod latency;
mod malloc;
mod metrics;
mod rules;

use crate::datapath::iface::{self, Attachment, HostRoute, Interfaces};
use crate::datapath::uplink::UplinkSpec;
use crate::datapath::watch::RouteEvents;
use crate::datapath::{self, load::DEFAULT_BPFFS_ROOT, Datapath, ProgramReport};
use crate::monitor::access::MonitorGroup;
use crate::monitor::protocol::DEFAULT_SOCKET;
use crate::monitor::view::{NodeView, PeerNames, SharedView};
use crate::monitor::Monitor;
use crate::source::api::{ApiSource, Connection};
use crate::source::delta;
use crate::source::input::{self, Verdict};
use crate::source::manifests::ManifestSource;
use crate::source::Source;
use anyhow::{Context, Result};
use datapath_metrics::DatapathMetrics;
use health::Health;
use http::MetricsAddr;
use latency::Latency;
use metrics::{Metrics, StepLabel};
use palisade_compiler::{CompiledNode, Compiler, IdentityAllocator};
use palisade_policy::Model;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Manifest files or directories (YAML or JSON); repeat or list several.
    /// Without it (and without --kubeconfig) the agent watches the API
    /// server with the pod's in-cluster configuration.
    #[arg(long, num_args = 1.., conflicts_with = "kubeconfig")]
    pub manifests: Vec<PathBuf>,
    /// Watch the API server named by this kubeconfig file (its current
    /// context).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: pods with `spec.nodeName` equal to it are local.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// bpf filesystem directory for the pins, on a bpffs mounted before
    /// the agent starts (it refuses any other); the node's maps and links
    /// go in `<bpffs-root>/<node>/`.
    #[arg(long, default_value = DEFAULT_BPFFS_ROOT)]
    pub bpffs_root: PathBuf,
    /// Program once and exit (pins stay: enforcement continues).
    #[arg(long)]
    pub once: bool,
    /// File rewritten after every programming round with the number of
    /// rounds so far (continuing the count found in the file), so that tools
    /// can wait for a change to be enforced.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// How often to look for manifest and interface changes.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Serve /healthz, /readyz and /metrics on this address: IP:PORT,
    /// [IPv6]:PORT, or an IP alone for port 9090 (0.0.0.0:9090 every
    /// address, the node's IP one network, 127.0.0.1 the node itself).
    #[arg(long)]
    pub metrics_addr: Option<MetricsAddr>,
    /// /healthz fails when the agent loop has not ticked (a round, or a
    /// look for changes while idle) for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub liveness_timeout_secs: u64,
    /// Kill a child command (`ip`) that runs longer than this many seconds;
    /// /healthz fails until the command next completes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub command_timeout_secs: u64,
    /// Serve the verdict stream (`palisade monitor`) on this Unix socket
    /// (mode 0660, owned by root and --monitor-group; a stale socket file
    /// is replaced, removed on exit).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub monitor_socket: PathBuf,
    /// The group that may read the verdict stream: a group name or a
    /// numeric GID (in a container, a GID: names resolve in the image).
    /// Without it the socket's group is root's.
    #[arg(long)]
    pub monitor_group: Option<MonitorGroup>,
    /// Put every policy in audit mode: nothing is dropped for policy
    /// reasons; what would be is passed, counted and reported as
    /// "would deny".
    #[arg(long)]
    pub audit: bool,
    /// The devices that carry pod traffic to other nodes, where a client's
    /// egress to a Service with a backend elsewhere is decided after DNAT:
    /// `auto` (the devices of the default routes), `none`, or a
    /// comma-separated list of interface names.
    #[arg(long, default_value = "auto")]
    pub uplink: UplinkSpec,
    /// The state directory of the chained CNI plugin (`palisade-cni`): its
    /// records name the pod interfaces it holds, the only way to find them
    /// on CNIs that install no per-pod host route (bridge layouts).
    #[arg(long, default_value = palisade_cni::config::DEFAULT_STATE_DIR)]
    pub cni_state_dir: PathBuf,
    /// Entries of each pod's own conntrack table (128 bytes of kernel
    /// memory each, preallocated and charged to the agent's cgroup): a pod
    /// with more flows than that evicts only its own oldest ones. 0 puts
    /// every pod in one node-wide table, where a busy pod evicts the
    /// others' flows.
    #[arg(long, default_value_t = palisade_common::CONNTRACK_POD_DEFAULT)]
    pub conntrack_per_pod: u32,
}

/// How long to wait before retrying a round that left errors (a pod that
/// could not be attached or written, a node-wide table that is full):
/// 250 ms after the first failure, doubling up to 5 s while it lasts.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    fn delay(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(16);
        (Self::FIRST * (1u32 << shift)).min(Self::MAX)
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }
}

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    malloc::limit_arenas();
    // Before anything is opened: pins that would not outlive the agent
    // are no enforcement.
    datapath::load::require_bpffs(&args.bpffs_root)?;
    let metrics = Metrics::new();
    let health = Health::new(Duration::from_secs(args.liveness_timeout_secs));
    datapath::command::set_timeout(Duration::from_secs(args.command_timeout_secs));
    let mut source: Box<dyn Source> = if !args.manifests.is_empty() {
        Box::new(ManifestSource::new(args.manifests.clone()))
    } else {
        let conn = match &args.kubeconfig {
            Some(path) => Connection::Kubeconfig(path.clone()),
            None => Connection::InCluster,
        };
        let mut api = ApiSource::start(conn, metrics.watch.clone())?;
        api.set_audit(args.audit);
        health.watch(api.liveness());
        Box::new(api)
    };
    if let Some(addr) = &args.metrics_addr {
        let bound = http::serve(addr.0, Arc::clone(&metrics), Arc::clone(&health))?;
        tracing::info!(%bound, "serving /healthz, /readyz and /metrics");
    }
    let object = datapath::ebpf_object()?;
    let mut dp = Datapath::open(object, &args.bpffs_root, &args.node)?;
    dp.set_uplinks(args.uplink.clone());
    dp.set_conntrack_per_pod(args.conntrack_per_pod);
    let records = args.cni_state_dir.clone();
    // A link the plugin pinned after this round read the records is the
    // plugin's hold, not a leftover: it is never detached.
    dp.set_recorded(Box::new(move || attachments::ifindexes(&records)));
    let view = SharedView::default();
    // Enforcement does not depend on observability: without its maps or
    // socket the agent still programs policy, and says why it cannot tell.
    let counters = match DatapathMetrics::new(dp.layout(), view.clone()) {
        Ok(c) => {
            metrics.register_collector(Box::new(datapath_metrics::Scrape(Arc::clone(&c))));
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "no datapath counters in /metrics");
            None
        }
    };
    let _monitor = if args.once {
        None
    } else {
        match Monitor::start(
            &args.monitor_socket,
            args.monitor_group.as_ref(),
            dp.layout(),
            view.clone(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "no verdict stream");
                None
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    // The pinned state is left untouched until the source has seen the whole
    // cluster once: a partial list would unprogram what is enforced.
    if !wait_synced(&stop, source.as_mut(), &health) {
        tracing::info!("stopping before the first sync; pinned state untouched");
        return Ok(ExitCode::SUCCESS);
    }
    let mut agent = Agent::new(&args, source, dp.identities(), metrics);
    agent.view = view;
    agent.counters = counters;
    // A failing first round (a node-wide table full, a kernel error) is
    // retried with backoff like any other: exiting would turn one node-wide
    // problem into a crash loop, and what is pinned keeps enforcing.
    let first = match agent.round(&mut dp) {
        Ok(clean) => clean,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "first programming round failed; retrying");
            false
        }
    };
    if !first {
        agent.metrics.round_errors.inc();
    }
    if args.once {
        return Ok(if first {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let poll = Duration::from_millis(args.poll_ms.max(10));
    let events = match RouteEvents::open() {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no link/route events; relying on polling");
            None
        }
    };
    let mut clean = first;
    let mut last_try = Instant::now();
    let mut backoff = Backoff::default();
    let mut records = attachments::Watch::new(&args.cni_state_dir);
    while !stop.load(Ordering::Relaxed) {
        wait_for_change(
            &stop,
            events.as_ref(),
            &mut records,
            agent.source.as_mut(),
            poll,
            &health,
        );
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let inputs_changed = agent.source.changed();
        let routes = match iface::routes() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read routes");
                continue;
            }
        };
        let attached = attachments::read(&agent.cni_state_dir);
        // An interface re-created under its old index reads the same in
        // the routes; only its dead links tell.
        let routes_changed = routes.hosts != agent.routes
            || attached != agent.attachments
            || !dp.defunct_links().is_empty();
        if routes_changed {
            // An interface appeared or went: timed from now.
            let now = Instant::now();
            agent.latency.learned(now);
            agent.latency.interfaces_changed(now);
        }
        let retry = !clean && last_try.elapsed() >= backoff.delay();
        if inputs_changed || routes_changed || retry {
            last_try = Instant::now();
            // The round programs with the routes and records just read.
            agent.fresh = Some((routes, attached));
            clean = match agent.round(&mut dp) {
                Ok(clean) => clean,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "programming round failed; enforced state kept");
                    false
                }
            };
            if clean {
                backoff = Backoff::default();
            } else {
                agent.metrics.round_errors.inc();
                backoff.failed();
            }
        }
    }
    tracing::info!("stopping; pinned state stays in place and keeps enforcing");
    Ok(ExitCode::SUCCESS)
}

/// Waits until the source can give a whole model; false when stopped first.
/// Ticks `health` meanwhile: an API that is not there yet is not a hang.
fn wait_synced(stop: &AtomicBool, source: &mut dyn Source, health: &Health) -> bool {
    let mut last_log: Option<Instant> = None;
    while !source.synced() {
        health.tick();
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::info!("waiting for the first full list of namespaces, pods and policies; pinned state untouched");
            last_log = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Sleeps until the next poll, a link or route event, a new or removed CNI
/// record, a settled change of the source, or a stop signal, whichever
/// comes first. Every step ticks `health`: waiting is the loop's idle
/// state, not a hang.
fn wait_for_change(
    stop: &AtomicBool,
    events: Option<&RouteEvents>,
    records: &mut attachments::Watch,
    source: &mut dyn Source,
    total: Duration,
    health: &Health,
) {
    // The source is asked this often, and every millisecond while a
    // change settles; its wake descriptor ends a wait as soon as it changes.
    let step = Duration::from_millis(10);
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        health.tick();
        let now = Instant::now();
        if now >= end {
            return;
        }
        if source.notify() || records.changed() {
            return;
        }
        let step = if source.settling() {
            Duration::from_millis(1)
        } else {
            step
        };
        let slice = step.min(end - now);
        match events {
            Some(ev) => {
                if ev.wait(slice, source.wake_fd()) {
                    return;
                }
            }
            None => std::thread::sleep(slice),
        }
    }
}

/// The agent's state between rounds.
struct Agent {
    source: Box<dyn Source>,
    metrics: Arc<Metrics>,
    node: String,
    ready_file: Option<PathBuf>,
    /// Seeded with the pinned identities, then handed to `compiler`.
    alloc: IdentityAllocator,
    /// The incremental compiler, from the first compiled model on: a round
    /// recompiles only what the model's changes touch (`delta.rs`). Its
    /// output is the node of `last_model`, what a round with unreadable
    /// input programs again.
    compiler: Option<Compiler>,
    /// Identities found pinned at start, handed to the allocator with the
    /// first model so that a restart keeps every number.
    pinned_identities: Option<BTreeMap<IpAddr, u32>>,
    last_model: Option<Model>,
    routes: BTreeMap<IpAddr, HostRoute>,
    /// Routes and CNI records the loop read for the next round, so that
    /// it reads them no second time.
    fresh: Option<(iface::Routes, Vec<Attachment>)>,
    /// The CNI plugin's records, as last read from `cni_state_dir`.
    attachments: Vec<Attachment>,
    cni_state_dir: PathBuf,
    /// Where other node names' pins would be (`left_to_others`).
    bpffs_root: PathBuf,
    rounds: u64,
    latency: Latency,
    /// `--audit`: every policy in audit mode.
    audit: bool,
    /// What the event decoder and the counter metrics know of the node.
    view: SharedView,
    /// The name of every pod address, shared by the views.
    peer_names: PeerNames,
    counters: Option<Arc<DatapathMetrics>>,
    /// The input's warnings already logged.
    warnings: input::WarningLog,
}

impl Agent {
    fn new(
        args: &AgentArgs,
        source: Box<dyn Source>,
        pinned: BTreeMap<IpAddr, u32>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Agent {
            source,
            metrics,
            node: args.node.clone(),
            ready_file: args.ready_file.clone(),
            alloc: IdentityAllocator::new(),
            compiler: None,
            pinned_identities: Some(pinned),
            last_model: None,
            routes: BTreeMap::new(),
            fresh: None,
            attachments: Vec::new(),
            cni_state_dir: args.cni_state_dir.clone(),
            bpffs_root: args.bpffs_root.clone(),
            // Continue the count of a previous agent, so that a reader waiting
            // for "a round after N" is never fooled by a restart.
            rounds: args.ready_file.as_deref().map_or(0, read_ready),
            latency: Latency::default(),
            audit: args.audit,
            view: SharedView::default(),
            peer_names: PeerNames::default(),
            counters: None,
            warnings: input::WarningLog::default(),
        }
    }

    /// One programming round. Ok(true) when everything was programmed,
    /// Ok(false) when some pod or interface needs a retry.
    fn round(&mut self, dp: &mut Datapath) -> Result<bool> {
        if let (Some(compiler), Some(model)) = (self.compiler.as_mut(), self.last_model.as_mut()) {
            // A source that patches the model in place: the round costs
            // what changed.
            if let Some(changes) = self.source.update(model) {
                let started = Instant::now();
                for change in changes {
                    compiler.apply(change);
                }
                let took = started.elapsed();
                self.note_input();
                self.metrics.compile_seconds.observe(took.as_secs_f64());
                return self.program(dp);
            }
        }
        let Some(mut model) = self.source.snapshot() else {
            // Not synced (cannot happen after `wait_synced`; a source never
            // loses its first sync): nothing to program yet.
            return Ok(true);
        };
        if self.audit {
            model.audit_all();
        }
        if let Some(at) = self.source.learned() {
            self.latency.learned(at);
        }
        log_input(&model, &mut self.warnings, &self.metrics);
        match input::reconcile(model, self.last_model.as_ref()) {
            Verdict::Use(model) => self.program_model(dp, model),
            Verdict::Hold(errors, partial) => {
                if self.compiler.is_none() {
                    if dp.endpoints().is_empty() {
                        // Nothing is enforced yet: partial policy beats none.
                        tracing::warn!(
                            unreadable = errors.len(),
                            "unreadable input and nothing enforced yet; programming what could be read"
                        );
                        return self.program_model(dp, partial);
                    }
                    tracing::error!(
                        unreadable = errors.len(),
                        "unreadable input: keeping the pinned state untouched until it is fixed"
                    );
                    return Ok(false);
                }
                tracing::error!(
                    unreadable = errors.len(),
                    "unreadable input: keeping the last good policy until it is fixed"
                );
                self.program(dp)
            }
        }
    }

    /// Logs and counts what the patched model holds of bad input.
    fn note_input(&mut self) {
        if let Some(at) = self.source.learned() {
            self.latency.learned(at);
        }
        if let Some(model) = &self.last_model {
            log_input(model, &mut self.warnings, &self.metrics);
            self.metrics.policies.set(model.policies.len() as i64);
        }
    }

    fn program_model(&mut self, dp: &mut Datapath, model: Model) -> Result<bool> {
        if let Some(pinned) = self.pinned_identities.take() {
            let n = self.alloc.seed_from_pinned(&model, &pinned);
            tracing::debug!(identities = n, "took over pinned identity numbers");
        }
        let started = Instant::now();
        self.compile(&model);
        self.metrics
            .compile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.policies.set(model.policies.len() as i64);
        self.last_model = Some(model);
        self.program(dp)
    }

    /// Brings the compiler to `model`: incrementally from the last compiled
    /// model, cold the first time.
    fn compile(&mut self, model: &Model) {
        if let (Some(c), Some(prev)) = (self.compiler.as_mut(), self.last_model.as_ref()) {
            for change in delta::changes(prev, model) {
                c.apply(change);
            }
            return;
        }
        let alloc = std::mem::take(&mut self.alloc);
        self.compiler = Some(Compiler::from_model(model, &self.node, alloc));
    }

    /// Addresses routed over interfaces that another node name's pins hold
    /// and that the model places on other nodes' pods: those interfaces are
    /// left to those pins, not held pending (`others::held_by_others`). Any
    /// other interface routed to an address of no local pod is held, even
    /// if the model places the address elsewhere: it may be reused here
    /// before the model says so.
    fn left_to_others(&self, compiled: &CompiledNode) -> BTreeSet<IpAddr> {
        let held = datapath::others::held_by_others(&self.bpffs_root, &self.node);
        if held.is_empty() {
            return BTreeSet::new();
        }
        let local: BTreeSet<&IpAddr> = compiled.pods.values().flat_map(|p| &p.ips).collect();
        self.routes
            .iter()
            .filter(|(ip, r)| held.contains(&r.ifindex) && !local.contains(ip))
            .filter(|(ip, _)| compiled.identities.contains_key(ip))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Hands the compiler's journal of changed addresses to the datapath
    /// and patches the peer names with it.
    fn note_identities(&mut self, dp: &mut Datapath) {
        let compiler = self
            .compiler
            .as_mut()
            .expect("a model is compiled before any programming");
        let journal = compiler.take_identity_changes();
        match &journal {
            Some(ips) => {
                for ip in ips {
                    self.peer_names.set(*ip, compiler.pod_at(ip).cloned());
                }
            }
            None => self.peer_names.replace(
                compiler
                    .pod_addresses()
                    .map(|(ip, pod)| (*ip, Arc::clone(pod)))
                    .collect(),
            ),
        }
        dp.note_identity_changes(journal);
    }

    /// Programs what the compiler holds (the last good model's node).
    fn program(&mut self, dp: &mut Datapath) -> Result<bool> {
        self.note_identities(dp);
        let compiler = self
            .compiler
            .as_ref()
            .expect("a model is compiled before any programming");
        let compiled = compiler.compiled();
        let (routes, attached) = match self.fresh.take() {
            Some(read) => read,
            None => (iface::routes()?, attachments::read(&self.cni_state_dir)),
        };
        dp.note_routes(&routes);
        self.routes = routes.hosts;
        self.attachments = attached;
        let devices = iface::PodDevices::scan();
        let elsewhere = self.left_to_others(compiled);
        let ifaces: Interfaces = iface::match_all(
            &self.routes,
            &self.attachments,
            compiled
                .pods
                .iter()
                .map(|(k, p)| (k.as_str(), p.ips.as_slice())),
            &elsewhere,
            &|i, n| devices.is_pod_device(i, n),
        );
        // Rule counter columns are attributed with the groups the kernel
        // ran with until now, before the round gives the bits new meaning.
        if let Some(c) = &self.counters {
            c.fold(&self.view.get());
        }
        let started = Instant::now();
        let report = dp.program(compiled, &ifaces);
        let took = started.elapsed();
        // Whatever the round managed to write is what the kernel runs now.
        let mut view = NodeView::build(compiled, self.peer_names.clone(), &ifaces, |i| {
            dp.endpoint(i)
        });
        view.name_node(dp.node_addrs());
        if let Some(c) = &self.counters {
            c.fold(&view);
        }
        self.view.set(view);
        let report = report?;
        self.metrics.program_seconds.observe(took.as_secs_f64());
        self.latency
            .attached(report.attached_at, &self.metrics.time_to_attach);
        self.latency.programmed(
            &ifaces,
            Instant::now(),
            &self.metrics.time_to_enforce,
            &self.metrics.pending_window,
        );
        self.metrics
            .identities
            .set(compiler.allocator().len() as i64);
        self.metrics.pods.set(report.pods as i64);
        // Over a capacity (compiled as deny-all) or not written.
        let over = ifaces
            .pods
            .keys()
            .filter(|k| compiled.pods.get(*k).is_some_and(|p| p.error.is_some()))
            .count();
        let failed_closed = over + report.write.failed.len();
        self.metrics.failed_closed.set(failed_closed as i64);
        self.metrics.rounds.inc();
        self.rounds += 1;
        log_report(self.rounds, &report);
        if let Some(path) = &self.ready_file {
            write_ready(path, self.rounds)?;
        }
        self.metrics.set_ready();
        for (step, e) in &report.node_errors {
            self.metrics
                .node_errors
                .get_or_create(&StepLabel { step })
                .inc();
            tracing::warn!(step, error = %e, "node-wide step left for the next round");
        }
        Ok(report.clean())
    }
}

/// Logs the input's errors and new warnings, and counts them.
fn log_input(model: &Model, warnings: &mut input::WarningLog, metrics: &Metrics) {
    for e in &model.errors {
        tracing::error!(error = %e, "invalid input skipped");
    }
    warnings.log(&model.warnings);
    metrics.invalid_objects.set(model.errors.len() as i64);
    let not_understood = model.policies.iter().filter(|p| p.unreadable.is_some());
    metrics
        .policies_not_understood
        .set(not_understood.count() as i64);
}

fn log_report(round: u64, r: &ProgramReport) {
    // Counts go in the message itself so that they read the same with or
    // without terminal colors.
    tracing::info!(
        "programmed generation={round} pods={} flipped={} records={} unchanged={} pending={} removed={} \
         attached={} identities_set={} identities_removed={} failed={}",
        r.pods,
        r.write.flipped,
        r.write.records,
        r.write.unchanged,
        r.write.pending,
        r.detached,
        r.attached,
        r.write.identities_set,
        r.write.identities_removed,
        r.write.failed.len() + r.attach_errors.len() + r.node_errors.len(),
    );
}

/// The round count in a ready file (0 when absent or unreadable).
fn read_ready(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the round counter atomically (temporary file, then rename), so a
/// reader never sees a partial number.
fn write_ready(path: &Path, rounds: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{rounds}\n"))
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Pod;

    fn pod(name: &str, app: &str, ip: &str) -> Pod {
        Pod {
            namespace: "ns".into(),
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            node: Some("n1".into()),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            pending: false,
        }
    }

    #[test]
    fn seeded_identities_survive_the_first_compile() {
        let model = Model {
            pods: vec![
                pod("a", "x", "10.0.0.1"),
                pod("b", "x", "10.0.0.2"),
                pod("c", "y", "10.0.0.3"),
            ],
            ..Model::default()
        };
        let pinned: BTreeMap<IpAddr, u32> = [
            ("10.0.0.1".parse().unwrap(), 900),
            ("10.0.0.2".parse().unwrap(), 900),
            ("10.0.0.3".parse().unwrap(), 777),
        ]
        .into_iter()
        .collect();
        let mut alloc = IdentityAllocator::new();
        assert_eq!(alloc.seed_from_pinned(&model, &pinned), 2);
        let compiled = palisade_compiler::compile(&model, "n1", &mut alloc);
        let ids: BTreeMap<IpAddr, u32> = compiled.identities.clone();
        assert_eq!(ids, pinned);
    }
}
