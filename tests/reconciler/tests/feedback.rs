//! SPEC 13 on a real API server: the feedback controller in-process against the fake
//! fulfillment service (plaintext). The CI status is written by the test, standing in for the
//! CI controller.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use cloudkit_api::metadata::UUID_LABEL;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec};
use cloudkit_feedback::controller::{FeedbackContext, FeedbackMetrics, run};
use cloudkit_feedback::fake::{FakeFulfillment, Method, TestCa};
use cloudkit_feedback::plan::FEEDBACK_FINALIZER;
use cloudkit_feedback::proto::private::v1 as pb;
use cloudkit_feedback::{FulfillmentClient, Settings};
use cloudkit_reconciler::Metrics;
use cloudkit_test_support::{eventually, wait_gone};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

const HOLD: &str = "example.com/hold";

fn labelled(name: &str, uuid: &str, finalizers: &[&str]) -> ComputeInstance {
    let mut ci = ComputeInstance::new(name, ComputeInstanceSpec::for_template("small"));
    ci.labels_mut().insert(UUID_LABEL.into(), uuid.into());
    ci.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    ci
}

async fn finalizers(api: &Api<ComputeInstance>, name: &str) -> Vec<String> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|ci| ci.finalizers().to_vec())
        .unwrap_or_default()
}

async fn set_phase(api: &Api<ComputeInstance>, name: &str, phase: &str) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": phase}})),
    )
    .await
    .unwrap();
}

async fn set_finalizers(api: &Api<ComputeInstance>, name: &str, finalizers: &[&str]) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": finalizers}})),
    )
    .await
    .unwrap();
}

fn updates(fake: &FakeFulfillment, id: &str) -> Vec<pb::ComputeInstance> {
    fake.calls_of(Method::Update)
        .into_iter()
        .filter(|c| c.id == id && c.code == tonic::Code::Ok)
        .filter_map(|c| c.object)
        .collect()
}

fn gets(fake: &FakeFulfillment, id: &str) -> usize {
    fake.calls_of(Method::Get)
        .iter()
        .filter(|c| c.id == id)
        .count()
}

fn state(object: &pb::ComputeInstance) -> i32 {
    object.status.as_ref().map(|s| s.state).unwrap_or_default()
}

async fn warnings(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

struct Feedback {
    client: Client,
    namespace: String,
    api: Api<ComputeInstance>,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feedback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(prefix: &str, address: &str) -> Feedback {
    let mut settings = Settings::new(address);
    settings.plaintext = true;
    settings.call_timeout = Duration::from_secs(5);
    start_with(prefix, FulfillmentClient::new(&settings).unwrap()).await
}

async fn start_with(prefix: &str, fulfillment: FulfillmentClient) -> Feedback {
    let env = cloudkit_testenv::shared();
    let client = env.admin_client().await;
    let namespace = env.namespace(prefix).await;
    let api: Api<ComputeInstance> = Api::namespaced(client.clone(), &namespace);
    let mut metrics = Metrics::new();
    let feedback_metrics = FeedbackMetrics::new();
    feedback_metrics.register(metrics.registry_mut());
    let ctx = Arc::new(FeedbackContext::new(
        client.clone(),
        fulfillment,
        feedback_metrics,
    ));
    let task = tokio::spawn(run(ctx, api.clone(), std::future::pending()));
    Feedback {
        client,
        namespace,
        api,
        metrics,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reaches_the_service_and_deletion_waits_for_it() {
    let fake = FakeFulfillment::new();
    let uuid = "0b5f5d7e-3c5a-4d43-a1a4-8a0f0d1f6f1e";
    let original = FakeFulfillment::object(uuid, "small");
    fake.insert(original.clone());
    let server = fake.serve_plaintext().await.unwrap();
    let f = start("feedback", &server.address()).await;
    let api = &f.api;

    // A labelled CI gets the feedback finalizer; other finalizers stay.
    api.create(&PostParams::default(), &labelled("vm-1", uuid, &[HOLD]))
        .await
        .unwrap();
    eventually("the feedback finalizer is added", || async {
        finalizers(api, "vm-1").await == [HOLD, FEEDBACK_FINALIZER]
    })
    .await;

    // The phase reaches the service; metadata and spec go back byte for byte.
    set_phase(api, "vm-1", "Running").await;
    eventually("an Update with RUNNING", || async {
        updates(&fake, uuid)
            .last()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Running as i32)
    })
    .await;
    let sent = updates(&fake, uuid).last().cloned().unwrap();
    assert_eq!(sent.metadata, original.metadata);
    assert_eq!(sent.spec, original.spec);
    assert_eq!(
        prost::Message::encode_to_vec(sent.spec.as_ref().unwrap()),
        prost::Message::encode_to_vec(original.spec.as_ref().unwrap())
    );
    assert_eq!(fake.stored(uuid).unwrap(), sent);

    // A change that means nothing to the service: a pass (a Get) but no Update.
    let updates_before = updates(&fake, uuid).len();
    let gets_before = gets(&fake, uuid);
    api.patch(
        "vm-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"example.com/note": "x"}}})),
    )
    .await
    .unwrap();
    eventually("a pass over the annotated CI", || async {
        gets(&fake, uuid) > gets_before
    })
    .await;
    // Evidence that passes go on: the next real change is the next Update.
    set_phase(api, "vm-1", "Failed").await;
    eventually("an Update with FAILED", || async {
        updates(&fake, uuid)
            .last()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Failed as i32)
    })
    .await;
    assert_eq!(
        updates(&fake, uuid).len(),
        updates_before + 1,
        "no Update for a change the service does not see"
    );

    // Deletion: DELETING first; the finalizer waits for the others.
    api.delete("vm-1", &DeleteParams::default()).await.unwrap();
    eventually("an Update with DELETING", || async {
        updates(&fake, uuid)
            .last()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Deleting as i32)
    })
    .await;
    assert_eq!(finalizers(api, "vm-1").await, [HOLD, FEEDBACK_FINALIZER]);
    assert_eq!(fake.signals(uuid), 0, "no Signal while the CI is held");

    // The last other finalizer goes: the feedback finalizer goes, then exactly one Signal.
    set_finalizers(api, "vm-1", &[FEEDBACK_FINALIZER]).await;
    wait_gone(api, "vm-1", None).await;
    eventually("a Signal", || async { fake.signals(uuid) >= 1 }).await;
    assert_eq!(fake.signals(uuid), 1);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_service_does_not_have_releases_a_deleting_ci() {
    let fake = FakeFulfillment::new();
    let server = fake.serve_plaintext().await.unwrap();
    let f = start("feedback-nf", &server.address()).await;
    let api = &f.api;
    let uuid = "4a0d5b8e-0000-4000-8000-000000000001";

    // Held by feedback already (added before the service lost the object).
    api.create(
        &PostParams::default(),
        &labelled("vm-2", uuid, &[HOLD, FEEDBACK_FINALIZER]),
    )
    .await
    .unwrap();
    eventually("a Warning about the missing object", || async {
        warnings(&f.client, &f.namespace, "vm-2")
            .await
            .iter()
            .any(|(reason, _)| reason == "FulfillmentObjectNotFound")
    })
    .await;
    assert_eq!(
        finalizers(api, "vm-2").await,
        [HOLD, FEEDBACK_FINALIZER],
        "kept while the CI lives"
    );

    api.delete("vm-2", &DeleteParams::default()).await.unwrap();
    eventually("the feedback finalizer is released", || async {
        finalizers(api, "vm-2").await == [HOLD]
    })
    .await;
    let notes = warnings(&f.client, &f.namespace, "vm-2").await;
    assert!(
        notes
            .iter()
            .any(|(reason, note)| reason == "FulfillmentObjectNotFound"
                && note.contains("deletion goes on")),
        "{notes:?}"
    );
    assert_eq!(fake.signals(uuid), 0);
    set_finalizers(api, "vm-2", &[]).await;
    wait_gone(api, "vm-2", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_the_service_and_catches_up_when_it_is_back() {
    let fake = FakeFulfillment::new();
    let uuid = "7c1e2f3a-0000-4000-8000-000000000002";
    fake.insert(FakeFulfillment::object(uuid, "small"));
    let server = fake.serve_plaintext().await.unwrap();
    let address = server.socket_addr();
    let f = start("feedback-down", &server.address()).await;
    let api = &f.api;

    api.create(&PostParams::default(), &labelled("vm-3", uuid, &[]))
        .await
        .unwrap();
    eventually("the feedback finalizer is added", || async {
        finalizers(api, "vm-3").await == [FEEDBACK_FINALIZER]
    })
    .await;

    // The service goes away; the CI is deleted.
    drop(server);
    api.delete("vm-3", &DeleteParams::default()).await.unwrap();
    eventually("a Warning that the service is unavailable", || async {
        warnings(&f.client, &f.namespace, "vm-3")
            .await
            .iter()
            .any(|(reason, _)| reason == "FulfillmentUnavailable")
    })
    .await;
    assert_eq!(
        finalizers(api, "vm-3").await,
        [FEEDBACK_FINALIZER],
        "the deletion waits"
    );
    let text = f.metrics.render();
    assert!(
        text.contains(
            "cloudkit_fulfillment_call_errors_total{method=\"get\",kind=\"unreachable\"}"
        ),
        "{text}"
    );

    // Back on the same address: the deletion finishes, with DELETING and one Signal.
    let _server = fake.serve_plaintext_at(address).await.unwrap();
    wait_gone(api, "vm-3", None).await;
    assert!(
        updates(&fake, uuid)
            .iter()
            .any(|o| state(o) == pb::ComputeInstanceState::Deleting as i32)
    );
    eventually("a Signal", || async { fake.signals(uuid) >= 1 }).await;
    assert_eq!(fake.signals(uuid), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_rotated_token_file() {
    let fake = FakeFulfillment::new();
    let uuid = "9d2f4c6b-0000-4000-8000-000000000003";
    fake.insert(FakeFulfillment::object(uuid, "small"));
    fake.require_token(Some("first-s3cret"));
    let ca = TestCa::generate().unwrap();
    let server = fake.serve_tls(&ca, true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-s3cret\n").unwrap();
    let mut settings = Settings::new(server.localhost_address());
    settings.token_file = Some(token_file.clone());
    settings.call_timeout = Duration::from_secs(5);
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    let f = start_with("feedback-tls", client).await;
    let api = &f.api;

    api.create(&PostParams::default(), &labelled("vm-4", uuid, &[]))
        .await
        .unwrap();
    eventually("the feedback finalizer is added", || async {
        finalizers(api, "vm-4").await == [FEEDBACK_FINALIZER]
    })
    .await;
    set_phase(api, "vm-4", "Running").await;
    eventually("an Update with RUNNING", || async {
        updates(&fake, uuid)
            .last()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Running as i32)
    })
    .await;
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer first-s3cret")),
        "{:?}",
        fake.calls()
    );

    // The token is rotated: the file is read again for the next call.
    fake.require_token(Some("second-s3cret"));
    std::fs::write(&token_file, "second-s3cret").unwrap();
    set_phase(api, "vm-4", "Failed").await;
    eventually("an Update with FAILED", || async {
        updates(&fake, uuid)
            .last()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Failed as i32)
    })
    .await;
    let last = fake.calls_of(Method::Update).last().cloned().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer second-s3cret"));

    // Neither token appears in events or metrics.
    let notes = warnings(&f.client, &f.namespace, "vm-4").await;
    let text = f.metrics.render();
    for secret in ["first-s3cret", "second-s3cret"] {
        assert!(!format!("{notes:?}").contains(secret));
        assert!(!text.contains(secret));
    }
}
