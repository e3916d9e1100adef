//! [`ServiceWatch`]: the live endpoints of one [`ServiceRef`], and [`Updates`], the stream of
//! changes subscribers apply (deltas; a reset only when they fell behind or the service moved).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::Result;
use crate::hub::registry::Registry;
use crate::mapping::services::{IndexState, ServiceIndex};
use crate::mapping::{Mapper, MappingRule};
use crate::model::{EndpointSet, ServiceRef, Target, Update};
use crate::publish::{Follower, Meta, Publisher};
use crate::resolution::Resolution;
use crate::wait;

/// Where a service is bound now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Binding {
    /// The Kubernetes Service.
    pub target: Target,
    /// How it was chosen.
    pub rule: MappingRule,
    /// What is wrong with it, when something is: a target Service that does not exist, with what
    /// might have been meant instead.
    pub problem: Option<String>,
}

impl Binding {
    pub(crate) fn new(target: Target, rule: MappingRule) -> Self {
        Binding { target, rule, problem: None }
    }
}

struct Inner {
    service: ServiceRef,
    rx: watch::Receiver<EndpointSet>,
    binding: watch::Receiver<Binding>,
    keep: Keep,
    /// The hub's shared parts (its probe and zone follower included) live as long as any watch.
    _hub: Arc<Registry>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("service", &self.service).field("keep", &self.keep).finish()
    }
}

#[derive(Debug)]
enum Keep {
    /// A fixed binding: the resolution itself (and the sender of `binding`).
    Fixed(#[allow(dead_code)] Arc<Resolution>, #[allow(dead_code)] watch::Sender<Binding>),
    /// A live binding: the task that follows the mapping and forwards the bound set.
    Task(JoinHandle<()>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Keep::Task(t) = &self.keep {
            t.abort();
        }
    }
}

/// The live endpoints of one Dubbo service. Cheap to clone; its work stops when the last clone (and
/// the [`crate::Discovery`] it came from has no other use for it) is gone.
#[derive(Clone, Debug)]
pub struct ServiceWatch {
    inner: Arc<Inner>,
}

impl ServiceWatch {
    pub(crate) fn fixed(
        hub: Arc<Registry>,
        service: ServiceRef,
        target: Target,
        rule: MappingRule,
        res: Arc<Resolution>,
    ) -> Self {
        let (tx, binding) = watch::channel(Binding::new(target, rule));
        let rx = res.rx.clone();
        ServiceWatch { inner: Arc::new(Inner { service, rx, binding, keep: Keep::Fixed(res, tx), _hub: hub }) }
    }

    /// Maps by annotations now (waiting up to the cold-start timeout for the namespace's Services),
    /// then keeps following them.
    pub(crate) async fn follow_annotations(
        hub: Arc<Registry>,
        service: ServiceRef,
        mapper: Mapper,
        index: Arc<ServiceIndex>,
    ) -> Result<Self> {
        let mut index_rx = index.watch();
        let wait = hub.cfg.api.cold_start_timeout;
        if tokio::time::timeout(wait, index_rx.wait_for(|s| s.loaded)).await.is_err() {
            warn!(
                ?wait,
                "the namespace's Services could not be listed in time; the naming rule applies until they can \
                 (the mapping follows them as soon as they answer)"
            );
        }
        let mut warned = Warned::default();
        let (target, rule, problem) = choose(&mapper, &service, &index_rx.borrow_and_update(), &mut warned, &hub)?;
        let res = hub.api_resolution(&target).await;
        info!(k8s_service = %target, rule = ?rule, "discovery started");
        let (publisher, rx) = Publisher::new(crate::model::Source::Api, hub.versions.clone());
        let (binding_tx, binding) = watch::channel(Binding { target, rule, problem });
        let restarts = hub.metrics.restarts("follow");
        let keep_hub = hub.clone();
        let follow = Follow {
            hub,
            service: service.clone(),
            mapper,
            index,
            index_rx,
            bound_rx: res.rx.clone(),
            bound: res,
            binding_tx,
            warned,
            out: Follower::new(publisher),
            generation: 0,
            switch: None,
            index_changed: false,
            index_open: true,
        };
        let task = crate::task::spawn("follow", service.to_string(), restarts, follow);
        Ok(ServiceWatch { inner: Arc::new(Inner { service, rx, binding, keep: Keep::Task(task), _hub: keep_hub }) })
    }

    /// The Dubbo identity.
    pub fn service(&self) -> &ServiceRef {
        &self.inner.service
    }

    /// The Kubernetes Service it is bound to now.
    pub fn target(&self) -> Target {
        self.inner.binding.borrow().target.clone()
    }

    /// The propagation of the target's EndpointSlice changes (API mode): how many were measured,
    /// and the latest one's delay in seconds from its `endpoints.kubernetes.io/last-change-trigger-time`
    /// to the published set. `None` before the first measured change (or outside API mode).
    pub fn propagation(&self) -> Option<(u64, f64)> {
        let t = self.target();
        let (count, last) = self.inner._hub.metrics.propagation_last(&format!("{}/{}", t.namespace, t.service));
        (count > 0).then_some((count, last))
    }

    /// How the target was chosen.
    pub fn rule(&self) -> MappingRule {
        self.inner.binding.borrow().rule
    }

    /// What is wrong with the binding now, if anything (see [`Binding::problem`]).
    pub fn problem(&self) -> Option<String> {
        self.inner.binding.borrow().problem.clone()
    }

    /// A receiver of the binding, which changes when annotations move the service.
    pub fn binding(&self) -> watch::Receiver<Binding> {
        self.inner.binding.clone()
    }

    /// The latest snapshot (O(1)).
    pub fn current(&self) -> EndpointSet {
        self.inner.rx.borrow().clone()
    }

    /// A receiver of every new snapshot; its current value counts as unseen.
    pub fn watch(&self) -> watch::Receiver<EndpointSet> {
        self.inner.rx.clone()
    }

    /// The changes to apply to follow this service: a [`Update::Reset`] first (once anything is
    /// known), then deltas. Ends when every clone of this handle is gone.
    pub fn updates(&self) -> Updates {
        Updates { rx: self.inner.rx.clone(), last: None }
    }

    /// Waits until the first answer (possibly empty) is known, up to `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Option<EndpointSet> {
        let mut rx = self.watch();
        tokio::time::timeout(timeout, rx.wait_for(|s| !s.pending)).await.ok()?.ok().map(|s| s.clone())
    }
}

/// The stream of [`Update`]s of one service (see [`ServiceWatch::updates`]).
#[derive(Debug)]
pub struct Updates {
    rx: watch::Receiver<EndpointSet>,
    last: Option<u64>,
}

impl Updates {
    /// The next update; `None` once the service handle is gone. Pending sets (nothing known yet)
    /// are not reported; a subscriber that fell further behind than the set's log gets a reset.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            let set = self.rx.borrow_and_update().clone();
            if !set.pending {
                match self.last {
                    Some(v) if v == set.version => {}
                    Some(v) => {
                        self.last = Some(set.version);
                        return Some(match set.deltas_since(v) {
                            Some(deltas) => Update::Apply { set, deltas },
                            None => Update::Reset(set),
                        });
                    }
                    None => {
                        self.last = Some(set.version);
                        return Some(Update::Reset(set));
                    }
                }
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The latest snapshot.
    pub fn current(&self) -> EndpointSet {
        self.rx.borrow().clone()
    }
}

/// Mapping warnings already given (so a namespace's every Service change does not repeat them).
#[derive(Default)]
struct Warned {
    tie: Vec<String>,
    bad_port: Option<String>,
    missing: Option<String>,
}

/// The target of `service` now: annotations first, else the naming rule; and, for the rule, what is
/// wrong when its Service does not exist (warned once per target).
fn choose(
    mapper: &Mapper,
    service: &ServiceRef,
    index: &IndexState,
    warned: &mut Warned,
    hub: &Registry,
) -> Result<(Target, MappingRule, Option<String>)> {
    let pairs = index.services.values().map(|s| (s.name.as_str(), &s.annotations));
    if let Some(choice) = mapper.by_annotations(service, pairs) {
        if !choice.tied_with.is_empty() && warned.tie != choice.tied_with {
            warn!(
                chosen = %choice.target.service,
                also = ?choice.tied_with,
                "several Services declare this service equally well; using the first by name (make one of \
                 them more specific, or remove the annotation from the others)"
            );
            hub.metrics.mapping_warning("tie");
        }
        warned.tie.clone_from(&choice.tied_with);
        if choice.bad_port.is_some() && warned.bad_port != choice.bad_port {
            warn!(
                k8s_service = %choice.target.service,
                value = choice.bad_port.as_deref().unwrap_or(""),
                port = %choice.target.port,
                "invalid dubbo.apache.org/port annotation (expected a port name or number); using the default port"
            );
            hub.metrics.mapping_warning("invalid_port");
        }
        warned.bad_port.clone_from(&choice.bad_port);
        return Ok((choice.target, MappingRule::Annotation, None));
    }
    let target = mapper.by_rule(service)?;
    let problem = missing_service(mapper, service, index, &target);
    if let Some(p) = &problem
        && warned.missing.as_ref() != Some(&target.service)
    {
        warn!(k8s_service = %target, "{p}");
        hub.metrics.mapping_warning("missing_service");
    }
    warned.missing = problem.as_ref().map(|_| target.service.clone());
    Ok((target, MappingRule::Template, problem))
}

/// When the namespace's Services are known and the naming rule's target is not among them: says
/// so, with the rule and what might have been meant.
fn missing_service(mapper: &Mapper, service: &ServiceRef, index: &IndexState, target: &Target) -> Option<String> {
    if !index.loaded || index.disabled.is_some() || index.services.contains_key(&target.service) {
        return None;
    }
    let pairs = index.services.values().map(|s| (s.name.as_str(), &s.annotations));
    let misses = mapper.near_misses(service, pairs);
    let hint = if misses.is_empty() {
        "no explicit mapping and no annotated Service names this interface".to_owned()
    } else {
        format!("for this interface: {}", misses.join("; "))
    };
    Some(format!(
        "the Service {target} does not exist: {service} matched no explicit mapping (DISCOVERY_MAPPINGS) and no \
         dubbo.apache.org annotation, so the naming rule (DISCOVERY_SERVICE_TEMPLATE) chose it; {hint}. Calls \
         fail until it exists: check the version and group asked for, or map them"
    ))
}

/// A re-target waiting for the new Service's first answer.
struct Switch {
    target: Target,
    rule: MappingRule,
    problem: Option<String>,
    res: Arc<Resolution>,
    rx: watch::Receiver<EndpointSet>,
    deadline: Instant,
}

struct Follow {
    hub: Arc<Registry>,
    service: ServiceRef,
    mapper: Mapper,
    /// Keeps the namespace's Service watch alive.
    #[allow(dead_code)]
    index: Arc<ServiceIndex>,
    index_rx: watch::Receiver<IndexState>,
    bound: Arc<Resolution>,
    bound_rx: watch::Receiver<EndpointSet>,
    binding_tx: watch::Sender<Binding>,
    warned: Warned,
    out: Follower,
    /// Bumped at each re-target, so the follower diffs against the new Service's set.
    generation: u64,
    switch: Option<Switch>,
    index_changed: bool,
    index_open: bool,
}

impl crate::task::Supervised for Follow {
    async fn run(&mut self) {
        loop {
            crate::task::checkpoint("follow");
            if std::mem::take(&mut self.index_changed) {
                self.remap().await;
            }
            let ready = self.switch.as_ref().is_some_and(|s| !s.rx.borrow().pending || Instant::now() >= s.deadline);
            if ready && let Some(s) = self.switch.take() {
                info!(to = %s.target, rule = ?s.rule, "re-targeted");
                self.hub.metrics.retarget(&self.service.to_string());
                self.bound = s.res;
                self.bound_rx = s.rx;
                self.generation += 1;
                self.binding_tx.send_replace(Binding { target: s.target, rule: s.rule, problem: s.problem });
            }
            {
                let set = self.bound_rx.borrow_and_update().clone();
                self.out.follow(self.generation, &set, Meta::of(&set));
            }
            let deadline = self.switch.as_ref().map(|s| s.deadline);
            tokio::select! {
                r = self.index_rx.changed(), if self.index_open => match r {
                    Ok(()) => self.index_changed = true,
                    Err(_) => self.index_open = false,
                },
                r = self.bound_rx.changed() => if r.is_err() { return },
                r = wait::changed(self.switch.as_mut().map(|s| &mut s.rx)) => if r.is_err() { self.switch = None },
                () = wait::sleep_until(deadline) => {}
                () = self.out.publisher.closed() => return,
            }
        }
    }

    /// What was published may be half-done: mark it stale, diff afresh against the bound set, and
    /// read the mapping again.
    fn recover(&mut self) {
        let current = self.out.publisher.current().clone();
        let meta = Meta { freshness: crate::model::Freshness::Stale { since: Instant::now() }, ..Meta::of(&current) };
        self.out.replace(&current, meta);
        self.generation += 1;
        self.index_changed = true;
    }
}

impl Follow {
    /// The namespace's Services changed: follow the mapping where it now points.
    async fn remap(&mut self) {
        let index = self.index_rx.borrow_and_update().clone();
        let (target, rule, problem) = match choose(&self.mapper, &self.service, &index, &mut self.warned, &self.hub) {
            Ok(chosen) => chosen,
            Err(e) => {
                warn!(error = %e, "the mapping has no target now; keeping the current one");
                return;
            }
        };
        let current = self.binding_tx.borrow().clone();
        let wanted_now = self.switch.as_ref().map_or(&current.target, |s| &s.target);
        if target != *wanted_now {
            if target == current.target {
                self.switch = None; // moved back before the new Service answered
            } else {
                let res = self.hub.api_resolution(&target).await;
                let rx = res.rx.clone();
                let deadline = Instant::now() + self.hub.cfg.api.cold_start_timeout;
                info!(from = %current.target, to = %target, "the service moved; waiting for the new Service's endpoints");
                self.switch = Some(Switch { target, rule, problem, res, rx, deadline });
            }
        } else if target == current.target && (rule != current.rule || problem != current.problem) {
            self.binding_tx.send_modify(|b| {
                b.rule = rule;
                b.problem = problem;
            });
        }
    }
}
