//! The Services of one namespace, kept current by one list/watch shared by every subscriber: what
//! annotation mapping reads (so that adding, changing or moving `dubbo.apache.org/*` annotations
//! re-targets running consumers), and what failover needs of a Service (its cluster IP and ports,
//! for the VIP) and zone awareness (`spec.trafficDistribution`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::listwatch::{Handler, ListWatch, Scope, Timings, Watcher};
use crate::metrics::Metrics;
use crate::model::{PortSpec, TrafficDistribution};
use crate::wire::{IntOrString, Service};

/// One port of a Service spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The pods' port: a number, or a container port name.
    pub target: Option<PortSpec>,
}

/// What discovery uses of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    pub name: String,
    /// Only the `dubbo.apache.org/*` annotations.
    pub annotations: BTreeMap<String, String>,
    /// `None` for a headless Service (`clusterIP: None`).
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `spec.trafficDistribution`.
    pub traffic: TrafficDistribution,
}

impl ServiceInfo {
    pub(crate) fn from_object(s: &Service) -> Option<Self> {
        let name = s.metadata.name.clone()?;
        // Only `dubbo.apache.org/*` annotations are decoded at all.
        let annotations = s.metadata.annotations.clone();
        let spec = s.spec.as_ref();
        let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok());
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok().filter(|n| *n > 0)?,
                    target: p.target_port.as_ref().and_then(|t| match t {
                        IntOrString::Int(n) => u16::try_from(*n).ok().map(PortSpec::Number),
                        IntOrString::String(s) => Some(PortSpec::Name(s.clone())),
                    }),
                })
            })
            .collect();
        let traffic = TrafficDistribution::parse(spec.and_then(|s| s.traffic_distribution.as_deref()));
        Some(ServiceInfo { name, annotations, cluster_ip, ports, traffic })
    }

    /// The Service port (on its cluster IP) that carries `spec`: by port name; by number, the port
    /// whose target is that number (or the port with that number); a single unnamed port serves any name.
    pub(crate) fn vip_port(&self, spec: &PortSpec) -> Option<u16> {
        match spec {
            PortSpec::Name(name) => {
                let named: Vec<(&str, u16)> = self.ports.iter().map(|p| (p.name.as_str(), p.port)).collect();
                crate::model::named_port(&named, name)
            }
            PortSpec::Number(n) => self
                .ports
                .iter()
                .find(|p| p.target == Some(PortSpec::Number(*n)))
                .or_else(|| self.ports.iter().find(|p| p.port == *n && p.target.is_none()))
                .map(|p| p.port),
        }
    }
}

/// What the index knows.
#[derive(Clone, Debug, Default)]
pub(crate) struct IndexState {
    pub services: imbl::OrdMap<String, Arc<ServiceInfo>>,
    /// A first list has answered (or the index will never answer: see `disabled`).
    pub loaded: bool,
    /// Why the index is not followed at all (no permission), if so.
    pub disabled: Option<String>,
    /// Set while the watch fails.
    pub failing_since: Option<Instant>,
}

/// One namespace's Services; the watch stops when the last handle goes.
#[derive(Debug)]
pub(crate) struct ServiceIndex {
    rx: watch::Receiver<IndexState>,
    task: Option<JoinHandle<()>>,
    /// A disabled index keeps its sender, so that receivers wait rather than see a closed channel.
    _idle: Option<watch::Sender<IndexState>>,
    /// The watch's (fixed) selection.
    _scope: Option<watch::Sender<Option<Scope>>>,
}

impl Drop for ServiceIndex {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

struct IndexHandler {
    tx: watch::Sender<IndexState>,
    /// The list being received (replaces the index whole when complete).
    listing: Option<imbl::OrdMap<String, Arc<ServiceInfo>>>,
}

impl Handler<Service> for IndexHandler {
    fn begin_list(&mut self, _scope: &Scope) {
        self.listing = Some(imbl::OrdMap::new());
    }

    fn list_item(&mut self, item: Service) {
        if let (Some(list), Some(info)) = (self.listing.as_mut(), ServiceInfo::from_object(&item)) {
            list.insert(info.name.clone(), Arc::new(info));
        }
    }

    fn end_list(&mut self) {
        let services = self.listing.take().unwrap_or_default();
        self.tx.send_modify(|s| {
            s.services = services;
            s.loaded = true;
        });
    }

    fn apply(&mut self, object: Service) {
        if let Some(info) = ServiceInfo::from_object(&object) {
            self.tx.send_if_modified(|s| {
                if s.services.get(&info.name).is_some_and(|old| **old == info) {
                    return false;
                }
                s.services.insert(info.name.clone(), Arc::new(info));
                true
            });
        }
    }

    fn delete(&mut self, object: Service) {
        if let Some(name) = object.metadata.name {
            self.tx.send_if_modified(|s| s.services.remove(&name).is_some());
        }
    }

    fn live(&mut self) {
        self.tx.send_if_modified(|s| s.failing_since.take().is_some());
    }

    fn failing(&mut self, since: Instant, _error: &str) {
        self.tx.send_if_modified(|s| {
            if s.failing_since.is_some() {
                return false;
            }
            s.failing_since = Some(since);
            true
        });
    }

    fn recover(&mut self) {
        // The index is replaced whole by the next list; until then it is not confirmed.
        self.failing(Instant::now(), "the Services watch panicked");
    }
}

impl ServiceIndex {
    /// Starts watching the Services of `namespace`.
    pub(crate) fn start(client: Client, namespace: &str, timings: Timings, metrics: Metrics) -> Self {
        let (tx, rx) = watch::channel(IndexState::default());
        let what = format!("services {namespace}");
        let restarts = metrics.restarts("services");
        // Every Service of the namespace, for as long as the index lives.
        let (scope_tx, scope) = watch::channel(Some(Scope::default()));
        let lw = ListWatch {
            kind: "services",
            client,
            path: format!("/api/v1/namespaces/{namespace}/services"),
            scope,
            timings,
            what: what.clone(),
            metrics,
            _kind: std::marker::PhantomData,
        };
        let handler = IndexHandler { tx, listing: None };
        let task = crate::task::spawn("services", what, restarts, Watcher { lw, handler });
        ServiceIndex { rx, task: Some(task), _idle: None, _scope: Some(scope_tx) }
    }

    /// An index that never answers, for when Services may not be read.
    pub(crate) fn disabled(why: String) -> Self {
        let (tx, rx) = watch::channel(IndexState { loaded: true, disabled: Some(why), ..IndexState::default() });
        ServiceIndex { rx, task: None, _idle: Some(tx), _scope: None }
    }

    pub(crate) fn watch(&self) -> watch::Receiver<IndexState> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ports: &[(&str, u16, Option<PortSpec>)]) -> ServiceInfo {
        ServiceInfo {
            name: "s".into(),
            annotations: BTreeMap::new(),
            cluster_ip: Some("10.96.0.10".parse().expect("ip")),
            ports: ports
                .iter()
                .map(|(n, p, t)| ServicePort { name: (*n).into(), port: *p, target: t.clone() })
                .collect(),
            traffic: TrafficDistribution::Any,
        }
    }

    #[test]
    fn vip_port_follows_the_service_spec() {
        let s =
            info(&[("tri", 80, Some(PortSpec::Name("tri".into()))), ("metrics", 9090, Some(PortSpec::Number(9091)))]);
        assert_eq!(s.vip_port(&PortSpec::Name("tri".into())), Some(80), "the Service port, not the pods'");
        assert_eq!(s.vip_port(&PortSpec::Number(9091)), Some(9090), "a target port number maps to its Service port");
        assert_eq!(s.vip_port(&PortSpec::Name("grpc".into())), None);
        let single = info(&[("", 50051, None)]);
        assert_eq!(single.vip_port(&PortSpec::Name("tri".into())), Some(50051), "one unnamed port serves any name");
    }

    #[test]
    fn reads_the_captured_service() {
        let json = r#"{"metadata":{"name":"greeter-v1","namespace":"demo","annotations":{
            "dubbo.apache.org/interface":"org.apache.dubbo.demo.GreeterService","dubbo.apache.org/version":"1.0.0",
            "kubectl.kubernetes.io/last-applied-configuration":"{}"}},
          "spec":{"ports":[{"name":"tri","protocol":"TCP","port":50051,"targetPort":"tri"}],
            "clusterIP":"10.96.0.159","type":"ClusterIP","trafficDistribution":"PreferClose"}}"#;
        let s: Service = serde_json::from_str(json).expect("service");
        let i = ServiceInfo::from_object(&s).expect("named");
        assert_eq!(i.annotations.len(), 2, "only dubbo.apache.org/* annotations are kept");
        assert_eq!(i.cluster_ip, Some("10.96.0.159".parse().expect("ip")));
        assert_eq!(i.vip_port(&PortSpec::Name("tri".into())), Some(50051));
        assert_eq!(i.traffic, TrafficDistribution::PreferSameZone, "PreferClose is PreferSameZone's older name");
        let headless: Service =
            serde_json::from_str(r#"{"metadata":{"name":"h"},"spec":{"clusterIP":"None"}}"#).expect("service");
        assert_eq!(ServiceInfo::from_object(&headless).expect("named").cluster_ip, None);
    }
}
