//! The Kubernetes objects discovery reads, as it reads them: only the fields it uses are decoded
//! (no `managedFields`, no status, no other labels or annotations), and lists are decoded one item
//! at a time as their bytes arrive, so a list of 100,000 endpoints never sits in memory whole, as
//! JSON or as objects.
//!
//! - [`Slice`] / [`Service`]: lean mirrors of `discovery.k8s.io/v1` EndpointSlice and `v1` Service.
//! - [`ItemSplitter`]: finds each element of a list's top-level `items` array (and its `metadata`)
//!   in a byte stream split anywhere.
//! - [`list`]: one list request, decoded item by item.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The label the EndpointSlice controller puts on every slice of a Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The time of the pod or Service change that led the controller to write this slice version.
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotations a Service mapping reads.
pub(crate) const DUBBO_ANNOTATION_PREFIX: &str = "dubbo.apache.org/";

/// A resource discovery lists and watches.
pub(crate) trait Object: DeserializeOwned + Clone + Send + fmt::Debug + 'static {
    /// `metadata.resourceVersion`.
    fn resource_version(&self) -> Option<&str>;
}

/// A map that keeps only the keys `keep` accepts; every other key and value is skipped unread.
fn filtered_map<'de, D: Deserializer<'de>>(d: D, keep: fn(&str) -> bool) -> Result<BTreeMap<String, String>, D::Error> {
    struct V(fn(&str) -> bool);
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                if (self.0)(&k) {
                    let v: Option<String> = m.next_value()?;
                    out.insert(k.into_owned(), v.unwrap_or_default());
                } else {
                    m.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }
    d.deserialize_option(OptionalMap(V(keep)))
}

/// `null` or a map, through the inner visitor.
struct OptionalMap<V>(V);
impl<'de, V: Visitor<'de, Value = BTreeMap<String, String>>> Visitor<'de> for OptionalMap<V> {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self.0)
    }
}

fn slice_labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    filtered_map(d, |k| k == SERVICE_NAME_LABEL)
}

fn slice_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    filtered_map(d, |k| k == TRIGGER_TIME_ANNOTATION)
}

fn dubbo_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    filtered_map(d, |k| k.starts_with(DUBBO_ANNOTATION_PREFIX))
}

/// `metadata` of a slice: name, version, the service-name label, the trigger-time annotation.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SliceMeta {
    pub name: Option<String>,
    pub resource_version: Option<String>,
    #[serde(default, deserialize_with = "slice_labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "slice_annotations")]
    pub annotations: BTreeMap<String, String>,
}

/// `discovery.k8s.io/v1` EndpointSlice, the fields discovery uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Slice {
    #[serde(default)]
    pub metadata: SliceMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Option<Vec<SliceEndpoint>>,
    #[serde(default)]
    pub ports: Option<Vec<SlicePort>>,
}

impl Slice {
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub(crate) fn service(&self) -> Option<&str> {
        self.metadata.labels.get(SERVICE_NAME_LABEL).map(String::as_str)
    }

    /// The controller's `last-change-trigger-time`, when present and valid (RFC 3339).
    pub(crate) fn trigger_time(&self) -> Option<std::time::SystemTime> {
        self.metadata.annotations.get(TRIGGER_TIME_ANNOTATION).and_then(|t| parse_rfc3339(t))
    }
}

impl Object for Slice {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SliceEndpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    pub hostname: Option<String>,
    pub target_ref: Option<TargetRef>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub hints: Option<EndpointHints>,
}

/// `conditions` of an endpoint.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

/// `targetRef` of an endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct TargetRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// `hints` of an endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointHints {
    pub for_zones: Option<Vec<Named>>,
    pub for_nodes: Option<Vec<Named>>,
}

/// `{"name": ...}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Named {
    #[serde(default)]
    pub name: String,
}

/// One port of a slice.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct SlicePort {
    pub name: Option<String>,
    pub port: Option<i32>,
}

/// `metadata` of a Service: name, version, the `dubbo.apache.org/*` annotations.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceMeta {
    pub name: Option<String>,
    pub resource_version: Option<String>,
    #[serde(default, deserialize_with = "dubbo_annotations")]
    pub annotations: BTreeMap<String, String>,
}

/// `v1` Service, the fields discovery uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Service {
    #[serde(default)]
    pub metadata: ServiceMeta,
    pub spec: Option<ServiceSpec>,
}

/// `spec` of a Service.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    pub ports: Option<Vec<ServicePort>>,
    pub traffic_distribution: Option<String>,
}

/// One port of a Service.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    pub target_port: Option<IntOrString>,
}

/// A port given by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i32),
    String(String),
}

impl Object for Service {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// `metadata` of a list.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListMeta {
    pub resource_version: Option<String>,
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
}

/// RFC 3339 as Kubernetes writes timestamps (`2024-05-01T10:00:00Z`, optionally with fractional
/// seconds and an offset).
pub(crate) fn parse_rfc3339(t: &str) -> Option<std::time::SystemTime> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let (y, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// What [`ItemSplitter`] found in the bytes fed to it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// One element of the top-level `items` array, whole.
    Item(Vec<u8>),
    /// The top-level `metadata` object, whole.
    Metadata(Vec<u8>),
}

/// Finds, in a JSON object fed in chunks split anywhere, each element of its top-level `items`
/// array and its top-level `metadata` object, keeping only the bytes of the element being read.
/// It tracks strings and escapes, so braces inside strings do not count; it does not validate the
/// JSON (each piece is parsed by serde afterwards, which does).
#[derive(Debug, Default)]
pub(crate) struct ItemSplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The top-level key being read (or last read), while at depth 1.
    key: Vec<u8>,
    reading_key: bool,
    /// At depth 1: after a key's colon, before the value's end (a string there is a value).
    after_colon: bool,
    /// What the current depth-2 value is: `items` array, `metadata` object, or something else.
    within: Within,
    /// Bytes of the piece being captured.
    capture: Vec<u8>,
    capturing: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Within {
    #[default]
    Other,
    Items,
    Metadata,
}

impl ItemSplitter {
    /// Feeds one chunk; every piece completed within it is passed to `out`.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut out: impl FnMut(Piece)) {
        let mut start = 0; // where the capture resumes in this chunk
        for (i, &c) in chunk.iter().enumerate() {
            if self.in_string {
                let closes = c == b'"' && !self.escaped;
                if self.reading_key && self.depth == 1 && !closes {
                    self.key.push(c);
                }
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                    self.reading_key = false;
                }
                continue;
            }
            match c {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.expecting_key() {
                        self.key.clear();
                        self.reading_key = true;
                    }
                }
                b':' if self.depth == 1 => self.after_colon = true,
                b',' if self.depth == 1 => self.after_colon = false,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 && self.after_colon {
                        self.within = match (c, self.key.as_slice()) {
                            (b'[', b"items") => Within::Items,
                            (b'{', b"metadata") => Within::Metadata,
                            _ => Within::Other,
                        };
                        if self.within == Within::Metadata {
                            self.capturing = true;
                            self.capture.clear();
                            start = i;
                        }
                    } else if self.depth == 3 && self.within == Within::Items && c == b'{' {
                        self.capturing = true;
                        self.capture.clear();
                        start = i;
                    }
                }
                b'}' | b']' => {
                    let closing = self.depth;
                    self.depth = self.depth.saturating_sub(1);
                    let done = match self.within {
                        Within::Items => closing == 3 && self.capturing,
                        Within::Metadata => closing == 2 && self.capturing,
                        Within::Other => false,
                    };
                    if done {
                        self.capture.extend_from_slice(&chunk[start..=i]);
                        self.capturing = false;
                        let bytes = std::mem::take(&mut self.capture);
                        out(if self.within == Within::Items { Piece::Item(bytes) } else { Piece::Metadata(bytes) });
                    }
                    if closing == 2 {
                        self.within = Within::Other;
                        self.after_colon = false;
                    }
                }
                _ => {}
            }
        }
        if self.capturing {
            self.capture.extend_from_slice(&chunk[start..]);
        }
    }

    /// At depth 1, a string is a key unless it follows a colon (then it is a value).
    fn expecting_key(&self) -> bool {
        !self.after_colon
    }

    /// Whether the input so far ended exactly at the end of the top-level object.
    pub(crate) fn complete(&self) -> bool {
        self.depth == 0 && !self.in_string && !self.capturing
    }
}

/// One list request decoded item by item: `each` gets every item as it is decoded; returns the
/// list's `metadata` (resourceVersion, continue token). A non-2xx answer is the API's error.
pub(crate) async fn list<K: DeserializeOwned>(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
    mut each: impl FnMut(K),
) -> Result<ListMeta, kube::Error> {
    let res = client.send(request.map(kube::client::Body::from)).await?;
    let status = res.status();
    let mut body = res.into_body().into_data_stream();
    if status.is_client_error() || status.is_server_error() {
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk?);
        }
        let st = serde_json::from_slice::<kube::core::Status>(&text).unwrap_or_else(|_| {
            kube::core::Status::failure(String::from_utf8_lossy(&text).trim(), "Failed to parse error data")
                .with_code(status.as_u16())
        });
        return Err(kube::Error::Api(st.boxed()));
    }
    let mut splitter = ItemSplitter::default();
    let mut meta = ListMeta::default();
    let mut error: Option<serde_json::Error> = None;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk?;
        splitter.feed(&chunk, |piece| {
            if error.is_some() {
                return;
            }
            match piece {
                Piece::Item(bytes) => match serde_json::from_slice::<K>(&bytes) {
                    Ok(item) => each(item),
                    Err(e) => error = Some(e),
                },
                Piece::Metadata(bytes) => match serde_json::from_slice::<ListMeta>(&bytes) {
                    Ok(m) => meta = m,
                    Err(e) => error = Some(e),
                },
            }
        });
        if let Some(e) = error.take() {
            return Err(kube::Error::SerdeError(e));
        }
    }
    if !splitter.complete() {
        return Err(kube::Error::SerdeError(serde::de::Error::custom(
            "the list ended before its JSON did (connection cut mid-body?)",
        )));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(json: &[u8], cuts: &[usize]) -> Vec<Piece> {
        let mut s = ItemSplitter::default();
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&json.len())) {
            let c = c.clamp(at, json.len());
            s.feed(&json[at..c], |p| out.push(p));
            at = c;
        }
        assert!(s.complete(), "ends at the end of the object");
        out
    }

    const LIST: &str = r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1",
      "metadata":{"resourceVersion":"42","continue":"tok{en}\"x"},
      "items":[{"metadata":{"name":"a","labels":{"kubernetes.io/service-name":"s","x":"}]"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}]},
               {"metadata":{"name":"b\\\"]}"},"addressType":"IPv4","endpoints":null,"ports":[{"name":"tri","port":1}]}]}"#;

    #[test]
    fn finds_each_item_and_the_metadata_whatever_the_chunks() {
        let whole = split_all(LIST.as_bytes(), &[]);
        assert_eq!(whole.len(), 3);
        let Piece::Metadata(m) = &whole[0] else { panic!("metadata first: {whole:?}") };
        let m: ListMeta = serde_json::from_slice(m).expect("metadata parses");
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.continue_.as_deref(), Some("tok{en}\"x"));
        let names: Vec<String> = whole[1..]
            .iter()
            .map(|p| match p {
                Piece::Item(b) => {
                    serde_json::from_slice::<Slice>(b).expect("item parses").metadata.name.unwrap_or_default()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["a", "b\\\"]}"]);
        for cut in 0..LIST.len() {
            assert_eq!(split_all(LIST.as_bytes(), &[cut]), whole, "split at {cut}");
        }
        let every: Vec<usize> = (0..LIST.len()).collect();
        assert_eq!(split_all(LIST.as_bytes(), &every), whole, "one byte at a time");
    }

    #[test]
    fn keeps_only_what_discovery_reads() {
        let s: Slice = serde_json::from_str(
            r#"{"metadata":{"name":"a","resourceVersion":"7","labels":{"kubernetes.io/service-name":"greeter","app":"x"},
               "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2024-05-01T10:00:00Z","other":"y"},
               "managedFields":[{"manager":"kube-controller-manager","fieldsV1":{"f:endpoints":{}}}]},
               "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true},
               "targetRef":{"kind":"Pod","name":"p","uid":"u"},"nodeName":"n","zone":"z","hints":{"forZones":[{"name":"z"}]},
               "deprecatedTopology":{"a":"b"}}],"ports":[{"name":"tri","port":50051,"protocol":"TCP"}]}"#,
        )
        .expect("parses");
        assert_eq!(s.service(), Some("greeter"));
        assert_eq!(s.metadata.labels.len(), 1, "other labels are not kept");
        assert_eq!(s.metadata.annotations.len(), 1, "other annotations are not kept");
        assert_eq!(s.trigger_time(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_714_557_600)));
        let svc: Service = serde_json::from_str(
            r#"{"metadata":{"name":"g","annotations":{"dubbo.apache.org/interface":"a.B","kubectl.kubernetes.io/last-applied-configuration":"{}"},"labels":null},
               "spec":{"clusterIP":"10.96.0.1","ports":[{"name":"tri","port":50051,"targetPort":"tri"}],"trafficDistribution":"PreferClose"}}"#,
        )
        .expect("parses");
        assert_eq!(svc.metadata.annotations.keys().collect::<Vec<_>>(), ["dubbo.apache.org/interface"]);
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.ports.expect("ports")[0].target_port, Some(IntOrString::String("tri".into())));
    }

    #[test]
    fn timestamps() {
        let at = |s| parse_rfc3339(s).map(|t| t.duration_since(std::time::UNIX_EPOCH).expect("after").as_nanos());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("2024-02-29T23:59:59.5Z"), Some(1_709_251_199_500_000_000));
        assert_eq!(at("2024-03-01T01:00:00+01:00"), Some(1_709_251_200_000_000_000));
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the items hold (strings with braces, quotes, escapes) and wherever the
            /// chunks are cut, the pieces are exactly the items serde finds in the whole document.
            #[test]
            fn pieces_equal_serde(names in prop::collection::vec("[a-z{}\\[\\]\"\\\\:,]{0,12}", 0..8),
                                  cuts in prop::collection::vec(0usize..400, 0..12)) {
                let items: Vec<serde_json::Value> = names.iter().map(|n| serde_json::json!({"metadata": {"name": n}, "x": [n, {"y": n}]})).collect();
                let doc = serde_json::json!({"kind": "L", "metadata": {"resourceVersion": "1"}, "items": items, "tail": {"items": [1]}}).to_string();
                let mut cuts = cuts;
                cuts.sort_unstable();
                let got: Vec<serde_json::Value> = split_all(doc.as_bytes(), &cuts).into_iter().filter_map(|p| match p {
                    Piece::Item(b) => Some(serde_json::from_slice(&b).expect("an item is whole JSON")),
                    Piece::Metadata(_) => None,
                }).collect();
                prop_assert_eq!(got, items);
            }
        }
    }
}

#[cfg(test)]
mod over_http {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_answer_is_the_apis_error_with_its_status() {
        let api = testkit::FakeApiServer::start().await.expect("api");
        let mut config = kube::Config::new(api.url().parse().expect("uri"));
        config.default_retry = false;
        let client = kube::Client::try_from(config).expect("client");
        let lp = kube::api::ListParams {
            resource_version: Some("999999".into()),
            version_match: Some(kube::api::VersionMatch::NotOlderThan),
            ..Default::default()
        };
        let req = kube::core::Request::new("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices")
            .list(&lp)
            .expect("req");
        let started = std::time::Instant::now();
        let r = list::<Slice>(&client, req, |_| {}).await;
        assert!(matches!(r, Err(kube::Error::Api(ref s)) if s.code == 504 && s.message.contains("Too large")), "{r:?}");
        assert!(started.elapsed() >= std::time::Duration::from_secs(3), "the server waited for the version first");
    }
}
