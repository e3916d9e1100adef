//! Dubbo identity → Kubernetes Service: explicit mapping, then Service annotations (API mode, kept
//! live by a Service watch per namespace, `mapping::services`), then a naming rule rendered from a
//! template and sanitised to a DNS-1035 label.

pub(crate) mod services;

use std::collections::BTreeMap;
use std::fmt;

use crate::config::vars::FromVar;
use crate::model::{PortSpec, ServiceRef, Target};

/// Annotation naming the interface(s) a Service serves (comma-separated).
pub const ANNOTATION_INTERFACE: &str = "dubbo.apache.org/interface";
/// Annotation naming the Dubbo version a Service serves (absent = no version, `*` = any).
pub const ANNOTATION_VERSION: &str = "dubbo.apache.org/version";
/// Annotation naming the Dubbo group a Service serves (absent = no group, `*` = any).
pub const ANNOTATION_GROUP: &str = "dubbo.apache.org/group";
/// Annotation naming the port (name or number) that speaks Triple.
pub const ANNOTATION_PORT: &str = "dubbo.apache.org/port";

/// A mapping problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingError {
    /// A template refers to something that does not exist.
    #[error("unknown placeholder {{{0}}}; accepted: {{interface}}, {{simple}}, {{group}}, {{version}}, {{major}}")]
    UnknownPlaceholder(String),
    /// A template has an unclosed brace.
    #[error("unclosed '{{' in template")]
    Unclosed,
    /// A rendered name cannot be a Service name.
    #[error(
        "failed to derive a Service name for {service}: {name:?} {why}; set DISCOVERY_SERVICE_TEMPLATE \
         or add an explicit mapping in DISCOVERY_MAPPINGS"
    )]
    BadName {
        /// The Dubbo identity.
        service: String,
        /// The rendered, sanitised name.
        name: String,
        /// Why it is not a DNS-1035 label.
        why: String,
    },
    /// An explicit mapping entry cannot be parsed.
    #[error(
        "mapping {entry:?}: {why}; expected [group/]interface[:version]=[namespace/]service[:port], comma-separated"
    )]
    BadMapping {
        /// The entry.
        entry: String,
        /// What is wrong.
        why: String,
    },
}

/// One explicit mapping: this identity lives in that Service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mapping {
    /// The Dubbo identity it applies to (exact match on interface, group, version).
    pub service: ServiceRef,
    /// Namespace, if not the default one.
    pub namespace: Option<String>,
    /// The Kubernetes Service name.
    pub target: String,
    /// Port, if not the default one.
    pub port: Option<PortSpec>,
}

/// `DISCOVERY_MAPPINGS` as read: the explicit mappings, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mappings(pub Vec<Mapping>);

impl FromVar for Mappings {
    fn from_var(text: &str) -> Result<Self, String> {
        parse_mappings(text).map(Mappings).map_err(|e| e.to_string())
    }
}

impl FromVar for Template {
    fn from_var(text: &str) -> Result<Self, String> {
        Template::parse(text).map_err(|e| e.to_string())
    }
}

/// Parses `[group/]interface[:version]=[namespace/]service[:port]`, comma-separated.
pub fn parse_mappings(s: &str) -> Result<Vec<Mapping>, MappingError> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| MappingError::BadMapping { entry: entry.to_owned(), why: why.to_owned() };
        let (left, right) = entry.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let (group, rest) = match left.split_once('/') {
            Some((g, r)) => (g.trim(), r.trim()),
            None => ("", left.trim()),
        };
        let (interface, version) = match rest.split_once(':') {
            Some((i, v)) => (i.trim(), v.trim()),
            None => (rest, ""),
        };
        if interface.is_empty() || interface.contains(char::is_whitespace) {
            return Err(bad("the interface is empty or has spaces"));
        }
        let (namespace, rest) = match right.split_once('/') {
            Some((n, r)) => (Some(n.trim().to_owned()), r.trim()),
            None => (None, right.trim()),
        };
        let (target, port) = match rest.split_once(':') {
            Some((t, p)) => (t.trim(), Some(PortSpec::from_var(p.trim()).map_err(|w| bad(&w))?)),
            None => (rest, None),
        };
        check_label(target, 63, true).map_err(|why| bad(&format!("service {target:?} {why}")))?;
        if let Some(ns) = &namespace {
            check_label(ns, 63, false).map_err(|why| bad(&format!("namespace {ns:?} {why}")))?;
        }
        out.push(Mapping {
            service: ServiceRef::new(interface).with_group(group).with_version(version),
            namespace,
            target: target.to_owned(),
            port,
        });
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Interface,
    Simple,
    Group,
    Version,
    Major,
}

/// A naming rule such as `{simple}-v{major}`, rendered then sanitised to a DNS-1035 label.
///
/// Placeholders: `{interface}` (whole interface), `{simple}` (last segment in kebab case:
/// `GreeterService` → `greeter-service`), `{group}`, `{version}`, `{major}` (version up to the first dot).
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Default for Template {
    /// `{simple}`: `GreeterService` → `greeter-service`.
    fn default() -> Self {
        Template { source: "{simple}".to_owned(), pieces: vec![Piece::Simple] }
    }
}

impl Template {
    /// Parses a template; unknown placeholders are an error.
    pub fn parse(s: &str) -> Result<Self, MappingError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(MappingError::Unclosed)? + open;
            let name = &rest[open + 1..close];
            pieces.push(match name {
                "interface" => Piece::Interface,
                "simple" => Piece::Simple,
                "group" => Piece::Group,
                "version" => Piece::Version,
                "major" => Piece::Major,
                other => return Err(MappingError::UnknownPlaceholder(other.to_owned())),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { source: s.to_owned(), pieces })
    }

    /// Renders and sanitises the Service name for `service`.
    pub fn render(&self, service: &ServiceRef) -> Result<String, MappingError> {
        let mut raw = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => raw.push_str(t),
                Piece::Interface => raw.push_str(&service.interface),
                Piece::Simple => raw.push_str(&kebab(service.simple_name())),
                Piece::Group => raw.push_str(&service.group),
                Piece::Version => raw.push_str(&service.version),
                Piece::Major => raw.push_str(service.version.split('.').next().unwrap_or("")),
            }
        }
        let name = sanitize(&raw);
        check_label(&name, 63, true).map_err(|why| MappingError::BadName {
            service: service.to_string(),
            name: name.clone(),
            why,
        })?;
        Ok(name)
    }
}

/// `GreeterService` → `greeter-service`, `HTTPServer` → `http-server`.
pub fn kebab(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                out.push('-');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Lowercases, turns every other character into '-', collapses runs of '-', trims '-' at both ends.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Checks a DNS label: 1..=`max` lowercase alphanumerics or '-', alphanumeric at both ends, and (for
/// DNS-1035, `letter_first`) a letter first. Returns why not.
pub fn check_label(s: &str, max: usize, letter_first: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".to_owned());
    }
    if s.len() > max {
        return Err(format!("is {} characters long, more than {max}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("has {c:?}: only lowercase letters, digits and '-' are allowed"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".to_owned());
    }
    if letter_first && !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a letter (DNS-1035)".to_owned());
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (node names): dot-separated labels, at most 253 characters.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("is {} characters long, more than 253", s.len()));
    }
    s.split('.').try_for_each(|label| check_label(label, 63, false))
}

/// How a target was chosen (for logs and `/debug/endpoints`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MappingRule {
    /// An entry of `DISCOVERY_MAPPINGS`.
    Explicit,
    /// A Service's `dubbo.apache.org/*` annotations.
    Annotation,
    /// `DISCOVERY_SERVICE_TEMPLATE`.
    Template,
}

/// Resolves identities with the explicit mappings and the naming rule.
#[derive(Clone, Debug)]
pub struct Mapper {
    mappings: Vec<Mapping>,
    template: Template,
    namespace: String,
    port: PortSpec,
}

impl Mapper {
    /// A mapper from its parts.
    pub fn new(mappings: Vec<Mapping>, template: Template, namespace: String, port: PortSpec) -> Self {
        Mapper { mappings, template, namespace, port }
    }

    /// From the crate's configuration.
    pub fn from_config(cfg: &crate::DiscoveryConfig) -> Self {
        Self::new(cfg.mappings.clone(), cfg.template.clone(), cfg.namespace.clone(), cfg.port.clone())
    }

    /// The same mapper with another default namespace.
    pub fn with_namespace(mut self, namespace: String) -> Self {
        self.namespace = namespace;
        self
    }

    /// The default namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The default port.
    pub fn port(&self) -> &PortSpec {
        &self.port
    }

    /// The explicit mapping for `service`, if any.
    pub fn explicit(&self, service: &ServiceRef) -> Option<Target> {
        self.mappings.iter().find(|m| &m.service == service).map(|m| Target {
            namespace: m.namespace.clone().unwrap_or_else(|| self.namespace.clone()),
            service: m.target.clone(),
            port: m.port.clone().unwrap_or_else(|| self.port.clone()),
        })
    }

    /// The naming rule's target for `service`.
    pub fn by_rule(&self, service: &ServiceRef) -> Result<Target, MappingError> {
        Ok(Target {
            namespace: self.namespace.clone(),
            service: self.template.render(service)?,
            port: self.port.clone(),
        })
    }

    /// What might have been meant when `service` matched nothing but the naming rule: explicit
    /// mappings and annotated Services (`(name, annotations)` of one namespace) for the same
    /// interface with another version or group.
    pub fn near_misses<'a>(
        &self,
        service: &ServiceRef,
        services: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
    ) -> Vec<String> {
        let mut out: Vec<String> = self
            .mappings
            .iter()
            .filter(|m| m.service.interface == service.interface && m.service != *service)
            .map(|m| format!("DISCOVERY_MAPPINGS has {} -> {}", m.service, m.target))
            .collect();
        for (name, ann) in services {
            let declares = ann
                .get(ANNOTATION_INTERFACE)
                .is_some_and(|i| i.split(',').map(str::trim).any(|i| i == service.interface));
            if declares {
                let get = |k: &str| ann.get(k).map_or("none", String::as_str).to_owned();
                out.push(format!(
                    "Service {name} declares it with version {} and group {}",
                    get(ANNOTATION_VERSION),
                    get(ANNOTATION_GROUP)
                ));
            }
        }
        out
    }

    /// Explicit mapping, else the naming rule (annotations are the API source's business, in between).
    pub fn resolve(&self, service: &ServiceRef) -> Result<(Target, MappingRule), MappingError> {
        match self.explicit(service) {
            Some(t) => Ok((t, MappingRule::Explicit)),
            None => Ok((self.by_rule(service)?, MappingRule::Template)),
        }
    }

    /// The Service whose annotations declare `service`, among `services` (`(name, annotations)` of
    /// one namespace): an exact version and group beat a `*` wildcard (the version weighs more); among
    /// equally good matches the first by name wins and the others are named in
    /// [`AnnotationChoice::tied_with`].
    pub fn by_annotations<'a>(
        &self,
        service: &ServiceRef,
        services: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
    ) -> Option<AnnotationChoice> {
        let mut best: Vec<(&str, &BTreeMap<String, String>)> = Vec::new();
        let mut best_score = 0;
        for (name, ann) in services {
            let Some(score) = annotation_score(ann, service) else { continue };
            if score > best_score {
                best_score = score;
                best.clear();
            }
            if score == best_score {
                best.push((name, ann));
            }
        }
        best.sort_by_key(|(name, _)| *name);
        let (name, ann) = *best.first()?;
        let (port, bad_port) = match ann.get(ANNOTATION_PORT).map(|p| p.trim()) {
            None | Some("") => (self.port.clone(), None),
            Some(p) => match PortSpec::from_var(p) {
                Ok(port) => (port, None),
                Err(_) => (self.port.clone(), Some(p.to_owned())),
            },
        };
        Some(AnnotationChoice {
            target: Target { namespace: self.namespace.clone(), service: name.to_owned(), port },
            tied_with: best[1..].iter().map(|(n, _)| (*n).to_owned()).collect(),
            bad_port,
        })
    }
}

/// The Service chosen by annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnnotationChoice {
    /// Where the service lives.
    pub target: Target,
    /// Other Services that match just as well (a configuration mistake worth a warning).
    pub tied_with: Vec<String>,
    /// An unusable `dubbo.apache.org/port` value (the default port was used instead).
    pub bad_port: Option<String>,
}

/// How well a Service's annotations match `service`: `None` when they do not; else higher is
/// better (exact beats `*`, the version weighs more than the group).
fn annotation_score(ann: &BTreeMap<String, String>, service: &ServiceRef) -> Option<u8> {
    let ifaces = ann.get(ANNOTATION_INTERFACE)?;
    if !ifaces.split(',').any(|i| i.trim() == service.interface) {
        return None;
    }
    let field = |key: &str, want: &str| match ann.get(key).map(|v| v.trim()) {
        None | Some("") => want.is_empty().then_some(2),
        Some("*") => Some(1),
        Some(v) => (v == want).then_some(2),
    };
    Some(field(ANNOTATION_VERSION, &service.version)? * 3 + field(ANNOTATION_GROUP, &service.group)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeter(version: &str) -> ServiceRef {
        ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version(version)
    }

    fn mapper(template: &str) -> Mapper {
        Mapper::new(
            parse_mappings("grp/org.x.Pinned:2.0.0=other/pinned-svc:9000").expect("valid"),
            Template::parse(template).expect("valid"),
            "demo".into(),
            PortSpec::Name("tri".into()),
        )
    }

    #[test]
    fn kebab_and_sanitize() {
        assert_eq!(kebab("GreeterService"), "greeter-service");
        assert_eq!(kebab("HTTPServer"), "http-server");
        assert_eq!(kebab("V2Api"), "v2-api");
        assert_eq!(sanitize("Org.Apache__Dubbo--X-"), "org-apache-dubbo-x");
        assert_eq!(sanitize("greeter-"), "greeter");
    }

    #[test]
    fn template_renders_and_sanitises() {
        let m = mapper("{simple}-v{major}");
        assert_eq!(m.by_rule(&greeter("1.0.0")).expect("ok").service, "greeter-service-v1");
        let m = mapper("{simple}-{version}");
        assert_eq!(m.by_rule(&greeter("2.1.0")).expect("ok").service, "greeter-service-2-1-0");
        assert_eq!(m.by_rule(&greeter("")).expect("ok").service, "greeter-service", "dangling '-' trimmed");
        let m = mapper("{interface}");
        assert_eq!(m.by_rule(&greeter("")).expect("ok").service, "org-apache-dubbo-demo-greeterservice");
    }

    #[test]
    fn template_errors_are_clear() {
        assert_eq!(Template::parse("{simple"), Err(MappingError::Unclosed));
        let e = Template::parse("{name}").expect_err("unknown");
        assert!(e.to_string().contains("{name}") && e.to_string().contains("{simple}"), "{e}");

        let m = mapper("{version}");
        let e = m.by_rule(&greeter("1.0.0")).expect_err("starts with a digit").to_string();
        assert!(e.contains("must start with a letter") && e.contains("DISCOVERY_MAPPINGS"), "{e}");
        let long = ServiceRef::new(format!("a.{}", "x".repeat(70)));
        let e = mapper("{simple}").by_rule(&long).expect_err("too long").to_string();
        assert!(e.contains("more than 63"), "{e}");
        let e = mapper("{group}").by_rule(&greeter("1")).expect_err("empty").to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn explicit_mapping_wins_and_matches_exactly() {
        let m = mapper("{simple}");
        let pinned = ServiceRef::new("org.x.Pinned").with_group("grp").with_version("2.0.0");
        let (t, rule) = m.resolve(&pinned).expect("ok");
        assert_eq!(rule, MappingRule::Explicit);
        assert_eq!(t.to_string(), "other/pinned-svc:9000");
        let (t, rule) = m.resolve(&ServiceRef::new("org.x.Pinned").with_version("2.0.0")).expect("ok");
        assert_eq!(rule, MappingRule::Template, "group differs: no explicit match");
        assert_eq!(t.to_string(), "demo/pinned:tri");
    }

    #[test]
    fn mapping_parse_errors() {
        for bad in ["no-equals", "a.B=Bad_Name", "a.B=svc:99999", "=svc", "a.B=1svc"] {
            let e = parse_mappings(bad).expect_err(bad).to_string();
            assert!(e.contains("expected [group/]interface"), "{e}");
        }
        let ms = parse_mappings(" a.B=svc , g/c.D:1=ns/svc2:tri ").expect("ok");
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[1].service.to_string(), "g/c.D:1");
    }

    #[test]
    fn annotation_matching() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let v1 = ann(&[(ANNOTATION_INTERFACE, "org.apache.dubbo.demo.GreeterService"), (ANNOTATION_VERSION, "1.0.0")]);
        let v2 = ann(&[
            (ANNOTATION_INTERFACE, "x.Other, org.apache.dubbo.demo.GreeterService"),
            (ANNOTATION_VERSION, "2.0.0"),
            (ANNOTATION_PORT, "grpc"),
        ]);
        let any = ann(&[(ANNOTATION_INTERFACE, "org.apache.dubbo.demo.GreeterService"), (ANNOTATION_VERSION, "*")]);
        let none = ann(&[("unrelated", "x")]);
        let m = mapper("{simple}");
        let services = vec![("greeter-v1", &v1), ("greeter-v2", &v2), ("zz-any", &any), ("plain", &none)];

        let c = m.by_annotations(&greeter("2.0.0"), services.clone()).expect("match");
        assert_eq!(c.target.service, "greeter-v2", "an exact version beats the wildcard zz-any");
        assert!(c.tied_with.is_empty());
        assert_eq!(c.target.port, PortSpec::Name("grpc".into()));
        let c = m.by_annotations(&greeter("1.0.0"), services.clone()).expect("match");
        assert_eq!(c.target.service, "greeter-v1");
        let c = m.by_annotations(&greeter("3.0.0"), services.clone()).expect("wildcard");
        assert_eq!(c.target.service, "zz-any");
        let grouped = greeter("1.0.0").with_group("blue");
        assert!(m.by_annotations(&grouped, vec![("greeter-v1", &v1)]).is_none(), "group must match");

        // two exact matches: the first by name, the other named; a bad port annotation is reported
        let twin = ann(&[
            (ANNOTATION_INTERFACE, "org.apache.dubbo.demo.GreeterService"),
            (ANNOTATION_VERSION, "1.0.0"),
            (ANNOTATION_PORT, "not a port!"),
        ]);
        let c = m.by_annotations(&greeter("1.0.0"), vec![("b-twin", &twin), ("a-v1", &v1)]).expect("match");
        assert_eq!((c.target.service.as_str(), c.tied_with.as_slice()), ("a-v1", &["b-twin".to_owned()][..]));
        let c = m.by_annotations(&greeter("1.0.0"), vec![("b-twin", &twin)]).expect("match");
        assert_eq!(c.bad_port.as_deref(), Some("not a port!"));
        assert_eq!(c.target.port, PortSpec::Name("tri".into()), "the default port is used instead");
        // group wildcard: exact group beats "*"; version outweighs group
        let any_group = ann(&[
            (ANNOTATION_INTERFACE, "org.apache.dubbo.demo.GreeterService"),
            (ANNOTATION_VERSION, "1.0.0"),
            (ANNOTATION_GROUP, "*"),
        ]);
        let blue_any_version = ann(&[
            (ANNOTATION_INTERFACE, "org.apache.dubbo.demo.GreeterService"),
            (ANNOTATION_VERSION, "*"),
            (ANNOTATION_GROUP, "blue"),
        ]);
        let c = m.by_annotations(&grouped, vec![("a", &blue_any_version), ("b", &any_group)]).expect("match");
        assert_eq!(c.target.service, "b", "exact version + any group beats any version + exact group");
    }

    #[test]
    fn subdomains() {
        assert!(check_subdomain("kind-worker2").is_ok());
        assert!(check_subdomain("ip-10-0-0-1.ec2.internal").is_ok());
        assert!(check_subdomain("Node_1").is_err());
        assert!(check_subdomain("a..b").is_err());
    }

    /// Whatever the identity, a rendered name is a valid Service name or a clear error; the
    /// sanitiser never panics and always gives a DNS label (or nothing).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn rendered_names_are_valid_labels(interface in ".{0,80}", version in ".{0,20}", group in ".{0,20}") {
                let service = ServiceRef::new(interface).with_version(version).with_group(group);
                for t in ["{simple}", "{simple}-v{major}", "{interface}", "{group}-{simple}-{version}"] {
                    let template = Template::parse(t).expect("template");
                    if let Ok(name) = template.render(&service) {
                        prop_assert!(check_label(&name, 63, true).is_ok(), "{t} gave {name:?}");
                    }
                }
            }

            #[test]
            fn sanitize_and_kebab_never_panic_and_sanitize_gives_a_label(raw in ".{0,100}") {
                let _ = kebab(&raw);
                let s = sanitize(&raw);
                prop_assert!(s.is_empty() || check_label(&s, 63, false).is_ok(), "sanitize({raw:?}) = {s:?}");
            }

            #[test]
            fn mapping_lists_parse_or_fail_cleanly(s in ".{0,120}") {
                let _ = parse_mappings(&s);
                let _ = Template::parse(&s);
            }
        }
    }
}
