//! A fresh API server per section, clients that count their own writes, and the API server's
//! own request counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, ImageSourceType, ImageSpec, RunStrategy};
use cloudkit_testenv::TestEnv;
use kube::Api;

use crate::probe::{self, Sample};

/// Write verbs as `apiserver_request_total` labels them.
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// What a write went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Target {
    /// `computeinstances` (create, delete, metadata patches).
    Object,
    /// `computeinstances/status`.
    Status,
    /// `events` (core or events.k8s.io).
    Event,
}

impl Target {
    fn from_label(label: &str) -> Option<Target> {
        [Target::Object, Target::Status, Target::Event]
            .into_iter()
            .find(|t| t.label() == label)
    }

    pub fn label(self) -> &'static str {
        match self {
            Target::Object => "computeinstances",
            Target::Status => "computeinstances/status",
            Target::Event => "events",
        }
    }
}

/// Counts of writes by (verb, target).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes(pub BTreeMap<(String, Target), f64>);

impl<'de> serde::Deserialize<'de> for Writes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, f64>::deserialize(d)?;
        let mut out = Writes::default();
        for (key, v) in map {
            let parsed = key
                .split_once(' ')
                .and_then(|(verb, t)| Some((verb.to_string(), Target::from_label(t)?)));
            match parsed {
                Some(k) => {
                    out.0.insert(k, v);
                }
                None => {
                    return Err(serde::de::Error::custom(format!("bad write key {key:?}")));
                }
            }
        }
        Ok(out)
    }
}

impl serde::Serialize for Writes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|((verb, t), v)| (format!("{verb} {}", t.label()), v)),
        )
    }
}

impl Writes {
    pub fn total(&self) -> f64 {
        self.0.values().fold(0.0, |a, b| a + b)
    }

    pub fn of(&self, target: Target) -> f64 {
        // Sums of nothing are -0.0; start from +0.0 so reports do not print "-0.00".
        self.0
            .iter()
            .filter(|((_, t), _)| *t == target)
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b)
    }

    pub fn verb(&self, verb: &str, target: Target) -> f64 {
        self.0
            .get(&(verb.to_string(), target))
            .copied()
            .unwrap_or(0.0)
    }

    /// `self - before`.
    pub fn since(&self, before: &Writes) -> Writes {
        let mut out = self.clone();
        for (k, v) in &before.0 {
            *out.0.entry(k.clone()).or_default() -= v;
        }
        out.0.retain(|_, v| v.abs() > f64::EPSILON);
        out
    }

    pub fn minus(&self, other: &Writes) -> Writes {
        self.since(other)
    }

    /// Compact text such as `PATCH computeinstances/status 3.00`.
    pub fn describe(&self, per: f64) -> String {
        self.0
            .iter()
            .map(|((verb, t), v)| format!("{verb} {} {:.2}", t.label(), v / per))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn classify(path: &str) -> Option<Target> {
    let path = path.split('?').next().unwrap_or(path);
    if path.contains("/computeinstances") {
        Some(if path.ends_with("/status") {
            Target::Status
        } else {
            Target::Object
        })
    } else if path.contains("/events") {
        Some(Target::Event)
    } else {
        None
    }
}

/// Requests the API server answered, by `VERB resource[/subresource]`: how many, and the
/// seconds they spent in it (`apiserver_request_duration_seconds`, wall time, so on a saturated
/// machine it includes waiting for a core). Watches and non-resource URLs are left out.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Requests(pub BTreeMap<String, (f64, f64)>);

impl Requests {
    fn from_samples(samples: &[Sample]) -> Requests {
        let mut out = Requests::default();
        for s in samples {
            let count = match s.name.as_str() {
                "apiserver_request_total" => true,
                "apiserver_request_duration_seconds_sum" => false,
                _ => continue,
            };
            let (Some(verb), Some(resource)) = (s.labels.get("verb"), s.labels.get("resource"))
            else {
                continue;
            };
            if matches!(verb.as_str(), "WATCH" | "CONNECT") || resource.is_empty() {
                continue;
            }
            let key = match s.labels.get("subresource").filter(|r| !r.is_empty()) {
                Some(sub) => format!("{verb} {resource}/{sub}"),
                None => format!("{verb} {resource}"),
            };
            let entry = out.0.entry(key).or_default();
            if count {
                entry.0 += s.value;
            } else {
                entry.1 += s.value;
            }
        }
        out
    }

    /// What was answered after `before`.
    pub fn since(&self, before: &Requests) -> Requests {
        let mut out = self.clone();
        for (key, (count, secs)) in &before.0 {
            let entry = out.0.entry(key.clone()).or_default();
            entry.0 -= count;
            entry.1 -= secs;
        }
        out.0.retain(|_, (count, _)| *count > 0.0);
        out
    }

    /// Both halves together.
    pub fn plus(&self, other: &Requests) -> Requests {
        let mut out = self.clone();
        for (key, (count, secs)) in &other.0 {
            let entry = out.0.entry(key.clone()).or_default();
            entry.0 += count;
            entry.1 += secs;
        }
        out
    }

    pub fn total(&self) -> (f64, f64) {
        self.0
            .values()
            .fold((0.0, 0.0), |(c, s), (count, secs)| (c + count, s + secs))
    }
}

/// The API server's counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct ApiCounters {
    /// Writes on ComputeInstances and events, refused ones included.
    pub writes: Writes,
    /// Reads of ComputeInstances (GET and LIST; watches excluded).
    pub reads: f64,
    /// Writes answered with 409 Conflict.
    pub conflicts: f64,
    /// Every request, by kind.
    pub requests: Requests,
}

impl ApiCounters {
    fn from_samples(samples: &[Sample]) -> ApiCounters {
        let total = samples
            .iter()
            .filter(|s| s.name == "apiserver_request_total");
        ApiCounters {
            writes: writes_from_samples(samples),
            reads: total
                .clone()
                .filter(|s| {
                    s.labels.get("resource").map(String::as_str) == Some("computeinstances")
                })
                .filter(|s| {
                    matches!(
                        s.labels.get("verb").map(String::as_str),
                        Some("GET" | "LIST")
                    )
                })
                .map(|s| s.value)
                .sum(),
            conflicts: total
                .filter(|s| s.labels.get("code").map(String::as_str) == Some("409"))
                .filter(|s| relevant(s).is_some())
                .map(|s| s.value)
                .sum(),
            requests: Requests::from_samples(samples),
        }
    }
}

/// Counts the writes a client sends, by verb and target, as the client sees them.
#[derive(Debug, Default)]
pub struct WriteCounter {
    counts: Mutex<BTreeMap<(String, Target), f64>>,
    /// GETs and LISTs of ComputeInstances.
    reads: std::sync::atomic::AtomicU64,
}

impl WriteCounter {
    pub fn shared() -> Arc<WriteCounter> {
        Arc::new(WriteCounter::default())
    }

    fn record(&self, method: &http::Method, path: &str) {
        let verb = method.as_str();
        if verb == "GET" {
            if classify(path) == Some(Target::Object) {
                self.reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        if !WRITE_VERBS.contains(&verb) {
            return;
        }
        if let Some(target) = classify(path) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *counts.entry((verb.to_string(), target)).or_default() += 1.0;
        }
    }

    /// The GETs and LISTs of ComputeInstances it sent (watches are GETs too: count only clients
    /// that do not watch).
    pub fn reads(&self) -> f64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed) as f64
    }

    pub fn snapshot(&self) -> Writes {
        Writes(
            self.counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// One API server (with etcd) for one section, and a namespace in it.
pub struct Cluster {
    pub env: TestEnv,
    pub namespace: String,
    pub client: kube::Client,
}

impl Cluster {
    pub async fn start(prefix: &str) -> anyhow::Result<Cluster> {
        let env = tokio::task::spawn_blocking(TestEnv::start)
            .await?
            .context("starting the test API server (run hack/testenv-install.sh once)")?;
        let client = env.try_admin_client().await?;
        let namespace = env.try_namespace(prefix).await?;
        Ok(Cluster {
            env,
            namespace,
            client,
        })
    }

    /// A new admin client whose writes are counted by `counter`.
    pub async fn counting_client(
        &self,
        counter: Arc<WriteCounter>,
    ) -> anyhow::Result<kube::Client> {
        let mut config = self.env.admin_config().await?;
        // Large lists under load take longer than the test default.
        config.read_timeout = Some(Duration::from_secs(120));
        let layer =
            tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
                counter.record(req.method(), req.uri().path());
                req
            });
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build())
    }

    pub fn cis(&self, client: &kube::Client) -> Api<ComputeInstance> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// The API server's own write counters on ComputeInstances and events: every write any
    /// client made, including refused ones (by `code`, summed here).
    pub async fn apiserver_writes(&self) -> anyhow::Result<Writes> {
        Ok(writes_from_samples(&self.apiserver_metrics().await?))
    }

    /// All the API server's counters the benchmark reads, from one scrape of its `/metrics`.
    pub async fn counters(&self) -> anyhow::Result<ApiCounters> {
        Ok(ApiCounters::from_samples(&self.apiserver_metrics().await?))
    }

    /// Another namespace in this API server.
    pub async fn extra_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        Ok(self.env.try_namespace(prefix).await?)
    }

    pub fn cis_in(&self, namespace: &str) -> Api<ComputeInstance> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn apiserver_metrics(&self) -> anyhow::Result<Vec<Sample>> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = self
            .client
            .request_text(request)
            .await
            .context("reading the API server's /metrics")?;
        Ok(probe::parse_prometheus(&text))
    }

    /// PIDs of etcd, kube-apiserver and kube-controller-manager.
    pub fn server_pids(&self) -> (u32, u32, u32) {
        let [etcd, apiserver, _watchdog] = self.env.pids();
        (etcd, apiserver, self.env.controller_manager_pid())
    }
}

fn relevant(s: &Sample) -> Option<(String, Target)> {
    let verb = s.labels.get("verb")?;
    if !WRITE_VERBS.contains(&verb.as_str()) {
        return None;
    }
    let target = match (
        s.labels.get("resource").map(String::as_str),
        s.labels.get("subresource").map(String::as_str),
    ) {
        (Some("computeinstances"), Some("status")) => Target::Status,
        (Some("computeinstances"), _) => Target::Object,
        (Some("events"), _) => Target::Event,
        _ => return None,
    };
    Some((verb.clone(), target))
}

fn writes_from_samples(samples: &[Sample]) -> Writes {
    let mut out = Writes::default();
    for s in samples
        .iter()
        .filter(|s| s.name == "apiserver_request_total")
    {
        if let Some(key) = relevant(s) {
            *out.0.entry(key).or_default() += s.value;
        }
    }
    out
}

/// The spec every benchmark CI gets: the SPEC's third test vector, a typical VM.
pub fn bench_spec() -> ComputeInstanceSpec {
    let mut spec = ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm");
    spec.image = Some(ImageSpec {
        source_type: ImageSourceType::Registry,
        source_ref: "quay.io/containerdisks/fedora:latest".into(),
    });
    spec.cores = Some(2);
    spec.memory_gib = Some(4);
    spec.boot_disk = Some(cloudkit_api::DiskSpec {
        size_gib: 20,
        storage_class: None,
    });
    spec.run_strategy = Some(RunStrategy::Always);
    spec
}

pub fn ci_name(i: usize) -> String {
    format!("vm-{i:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let base = "/apis/cloudkit.openshift.io/v1alpha1/namespaces/ns/computeinstances";
        assert_eq!(classify(base), Some(Target::Object));
        assert_eq!(classify(&format!("{base}/vm-1")), Some(Target::Object));
        assert_eq!(
            classify(&format!("{base}/vm-1/status")),
            Some(Target::Status)
        );
        assert_eq!(
            classify("/apis/events.k8s.io/v1/namespaces/ns/events"),
            Some(Target::Event)
        );
        assert_eq!(classify("/api/v1/namespaces"), None);
    }

    #[test]
    fn writes_survive_json() {
        let mut w = Writes::default();
        w.0.insert(("PATCH".into(), Target::Status), 3.0);
        w.0.insert(("POST".into(), Target::Event), 2.0);
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(
            text,
            r#"{"PATCH computeinstances/status":3.0,"POST events":2.0}"#
        );
        assert_eq!(serde_json::from_str::<Writes>(&text).unwrap(), w);
        assert!(serde_json::from_str::<Writes>(r#"{"PATCH pods":1.0}"#).is_err());
    }

    #[test]
    fn bench_spec_is_the_spec_test_vector() {
        assert_eq!(
            cloudkit_api::config_version(&bench_spec()),
            "1c15a84e66d482fb"
        );
    }

    #[test]
    fn apiserver_samples_to_requests_by_verb_and_resource() {
        let text = "\
apiserver_request_total{code=\"200\",resource=\"tenants\",subresource=\"\",verb=\"PATCH\"} 4
apiserver_request_total{code=\"409\",resource=\"tenants\",subresource=\"\",verb=\"PATCH\"} 1
apiserver_request_duration_seconds_sum{resource=\"tenants\",subresource=\"\",verb=\"PATCH\"} 0.5
apiserver_request_total{code=\"200\",resource=\"computeinstances\",subresource=\"status\",verb=\"PATCH\"} 2
apiserver_request_duration_seconds_sum{resource=\"computeinstances\",subresource=\"status\",verb=\"PATCH\"} 0.25
apiserver_request_total{code=\"200\",resource=\"computeinstances\",subresource=\"\",verb=\"WATCH\"} 9
apiserver_request_duration_seconds_sum{resource=\"computeinstances\",subresource=\"\",verb=\"WATCH\"} 900
apiserver_request_total{code=\"200\",path=\"/metrics\",verb=\"GET\"} 3
apiserver_request_duration_seconds_count{resource=\"tenants\",subresource=\"\",verb=\"PATCH\"} 5
";
        let before = Requests::from_samples(&probe::parse_prometheus(text));
        assert_eq!(
            before.0.into_iter().collect::<Vec<_>>(),
            vec![
                ("PATCH computeinstances/status".to_string(), (2.0, 0.25)),
                ("PATCH tenants".to_string(), (5.0, 0.5)),
            ]
        );
        let before = Requests::from_samples(&probe::parse_prometheus(text));
        let later = before.plus(&Requests(
            [("GET computeinstances".to_string(), (3.0, 0.125))].into(),
        ));
        let diff = later.since(&before);
        assert_eq!(diff.total(), (3.0, 0.125));
        assert_eq!(diff.0.len(), 1, "unchanged kinds drop out: {diff:?}");
    }

    #[test]
    fn apiserver_samples_to_writes() {
        let text = r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="cloudkit.openshift.io",resource="computeinstances",scope="resource",subresource="",verb="POST",version="v1alpha1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cloudkit.openshift.io",resource="computeinstances",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 30
apiserver_request_total{code="409",component="apiserver",dry_run="",group="cloudkit.openshift.io",resource="computeinstances",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cloudkit.openshift.io",resource="computeinstances",scope="resource",subresource="",verb="GET",version="v1alpha1"} 99
apiserver_request_total{code="201",component="apiserver",dry_run="",group="events.k8s.io",resource="events",scope="resource",subresource="",verb="POST",version="v1"} 5
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 5
"#;
        let w = writes_from_samples(&probe::parse_prometheus(text));
        assert_eq!(w.verb("POST", Target::Object), 10.0);
        assert_eq!(w.verb("PATCH", Target::Status), 32.0);
        assert_eq!(w.of(Target::Event), 5.0);
        assert_eq!(w.total(), 47.0);
    }
}
