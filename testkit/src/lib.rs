//! Test servers that speak the real protocols on loopback sockets, for this crate's tests, the
//! applications' tests and benchmarks: a Kubernetes API server (list/watch of EndpointSlices,
//! Services, SelfSubjectAccessReviews) and an authoritative DNS server answering like CoreDNS.
//! Both can be stopped, restarted and made to misbehave. And a TCP proxy that resets connections
//! in flight. With the `envtest` feature, a real kube-apiserver and etcd from `KUBEBUILDER_ASSETS`; with
//! `certs`, test certificates and a directory that changes as a mounted Secret does.

#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "certs")]
pub mod certs;
pub mod dns;
#[cfg(feature = "envtest")]
pub mod envtest;
pub mod proxy;

pub use api::{FakeApiServer, ListKind, Misbehaviour, PodEndpoint, StoreSnapshot, endpoint_slice, service_object};
pub use dns::{Behaviour, FakeDns};
pub use hickory_proto::rr::RecordType;
pub use proxy::ResetProxy;
