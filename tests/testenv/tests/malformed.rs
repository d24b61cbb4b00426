#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A corpus of malformed `ComputeInstance` objects, each derived from `crds/computeinstance.yaml`
//! (SPEC 1.1, 1.2, 2): the real API server must refuse every one as 422 Invalid, with a message
//! that names the offending field.
//!
//! The server is kube-apiserver 1.20, which drops the CEL `x-kubernetes-validations` rules of the
//! CRD (SPEC 1.1 accepts that). The immutability rows therefore run only against a server that
//! enforces CEL (1.25 or later); on 1.20 they are listed as skipped, and a separate test pins
//! down that 1.20 really does accept such an update, so that the skip cannot hide a change.

use anyhow::{Context, Result, bail, ensure};
use cloudkit_api::ComputeInstance;
use cloudkit_testenv::shared;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn ci_resource() -> ApiResource {
    ApiResource::erase::<ComputeInstance>(&())
}

/// A ComputeInstance with the given `spec` (`None`: no spec at all).
fn raw_ci(name: &str, spec: Option<Value>) -> Result<DynamicObject> {
    let mut object = json!({
        "apiVersion": "cloudkit.openshift.io/v1alpha1",
        "kind": "ComputeInstance",
        "metadata": { "name": name },
    });
    if let Some(spec) = spec {
        object["spec"] = spec;
    }
    Ok(serde_json::from_value(object)?)
}

/// The API server's message for a request that must be refused as invalid (422).
fn invalid_message<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        other => bail!("expected 422 Invalid, got {other:?}"),
    }
}

fn valid_spec() -> Value {
    json!({ "templateID": "test_template" })
}

/// A valid spec with `field` set to `value`.
fn spec_with(field: &str, value: Value) -> Value {
    let mut spec = valid_spec();
    spec[field] = value;
    spec
}

/// A valid job entry.
fn valid_job() -> Value {
    json!({
        "jobID": "17",
        "type": "provision",
        "state": "Running",
        "timestamp": "2026-01-02T03:04:05Z",
    })
}

/// `base` with `field` set to `value` (`None`: the field removed).
fn with_field(mut base: Value, field: &str, value: Option<Value>) -> Value {
    match value {
        Some(v) => base[field] = v,
        None => {
            if let Some(o) = base.as_object_mut() {
                o.remove(field);
            }
        }
    }
    base
}

fn job_with(field: &str, value: Option<Value>) -> Value {
    with_field(valid_job(), field, value)
}

fn condition_with(field: &str, value: Option<Value>) -> Value {
    with_field(valid_condition(), field, value)
}

fn valid_condition() -> Value {
    json!({
        "type": "ConfigurationApplied",
        "status": "False",
        "reason": "Provisioning",
        "message": "applying",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
    })
}

/// What a row sends.
enum Op {
    /// Create the object with this `spec` (`None`: without a spec).
    Create(Option<Value>),
    /// Create the object with a name that is not valid, and a valid spec.
    CreateNamed(String),
    /// Create a valid object, then merge-patch its status subresource with `{"status": <value>}`.
    Status(Value),
    /// Create with the first spec, then replace the spec with the second.
    Update(Value, Value),
    /// Like [`Op::Update`], but the refusal comes from a CEL rule: needs a server that
    /// enforces `x-kubernetes-validations`.
    CelUpdate(Value, Value),
}

struct Row {
    name: &'static str,
    op: Op,
    /// The field path the server's message must name. Servers of the 1.20 line leave list
    /// indices out of it (`spec.additionalDisks.sizeGiB`).
    path: &'static str,
    /// Further text the message must contain (the kind of violation).
    detail: &'static str,
}

fn row(name: &'static str, op: Op, path: &'static str, detail: &'static str) -> Row {
    Row {
        name,
        op,
        path,
        detail,
    }
}

fn create(spec: Value) -> Op {
    Op::Create(Some(spec))
}

fn status_job(job: Value) -> Op {
    Op::Status(json!({ "jobs": [job] }))
}

fn corpus() -> Vec<Row> {
    let image =
        json!({ "sourceType": "registry", "sourceRef": "quay.io/containerdisks/fedora:latest" });
    let disk = json!({ "sizeGiB": 20 });
    vec![
        // The object and the spec as a whole.
        row("no spec", Op::Create(None), "spec", "Required value"),
        row(
            "spec is a string",
            create(json!("vm")),
            "spec",
            "must be of type object",
        ),
        row(
            "spec is an array",
            create(json!([valid_spec()])),
            "spec",
            "must be of type object",
        ),
        row(
            "metadata.name with upper case and underscore",
            Op::CreateNamed("VM_1".into()),
            "metadata.name",
            "Invalid value",
        ),
        row(
            "metadata.name longer than 253 characters",
            Op::CreateNamed("v".repeat(254)),
            "metadata.name",
            "must be no more than 253",
        ),
        // templateID: required, a string, pattern ^[a-zA-Z_][a-zA-Z0-9._]*$.
        row(
            "templateID missing",
            create(json!({ "cores": 2 })),
            "spec.templateID",
            "Required value",
        ),
        row(
            "templateID with a hyphen",
            create(json!({ "templateID": "my-template" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID starting with a digit",
            create(json!({ "templateID": "1template" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID starting with a dot",
            create(json!({ "templateID": ".template" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID empty",
            create(json!({ "templateID": "" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID with a space",
            create(json!({ "templateID": "my template" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID with a slash",
            create(json!({ "templateID": "ns/template" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID with a trailing newline",
            create(json!({ "templateID": "template\n" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID with a non-ASCII letter",
            create(json!({ "templateID": "t\u{e9}mplate" })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID oversized, ending in a hyphen",
            create(json!({ "templateID": format!("{}-", "t".repeat(100_000)) })),
            "spec.templateID",
            "should match",
        ),
        row(
            "templateID a number",
            create(json!({ "templateID": 42 })),
            "spec.templateID",
            "must be of type string",
        ),
        row(
            "templateID an object",
            create(json!({ "templateID": { "name": "t" } })),
            "spec.templateID",
            "must be of type string",
        ),
        // templateParameters: JSON *text*, not JSON.
        row(
            "templateParameters an object",
            create(spec_with("templateParameters", json!({ "key": "value" }))),
            "spec.templateParameters",
            "must be of type string",
        ),
        row(
            "templateParameters a number",
            create(spec_with("templateParameters", json!(1))),
            "spec.templateParameters",
            "must be of type string",
        ),
        // image: {sourceType: enum [registry], sourceRef: minLength 1}, both required.
        row(
            "image a string",
            create(spec_with("image", json!("quay.io/fedora"))),
            "spec.image",
            "must be of type object",
        ),
        row(
            "image.sourceType not registry",
            create(spec_with(
                "image",
                json!({ "sourceType": "docker", "sourceRef": "quay.io/fedora" }),
            )),
            "spec.image.sourceType",
            "Unsupported value",
        ),
        row(
            "image.sourceType in another case",
            create(spec_with(
                "image",
                json!({ "sourceType": "Registry", "sourceRef": "quay.io/fedora" }),
            )),
            "spec.image.sourceType",
            "Unsupported value",
        ),
        row(
            "image.sourceType missing",
            create(spec_with("image", json!({ "sourceRef": "quay.io/fedora" }))),
            "spec.image.sourceType",
            "Required value",
        ),
        row(
            "image.sourceRef missing",
            create(spec_with("image", json!({ "sourceType": "registry" }))),
            "spec.image.sourceRef",
            "Required value",
        ),
        row(
            "image.sourceRef empty",
            create(spec_with(
                "image",
                json!({ "sourceType": "registry", "sourceRef": "" }),
            )),
            "spec.image.sourceRef",
            "at least 1 chars long",
        ),
        row(
            "image.sourceRef a number",
            create(spec_with(
                "image",
                json!({ "sourceType": "registry", "sourceRef": 7 }),
            )),
            "spec.image.sourceRef",
            "must be of type string",
        ),
        // cores: int32, 1..128.
        row(
            "cores zero",
            create(spec_with("cores", json!(0))),
            "spec.cores",
            "greater than or equal to 1",
        ),
        row(
            "cores negative",
            create(spec_with("cores", json!(-4))),
            "spec.cores",
            "greater than or equal to 1",
        ),
        row(
            "cores above 128",
            create(spec_with("cores", json!(129))),
            "spec.cores",
            "less than or equal to 128",
        ),
        row(
            "cores beyond int32",
            create(spec_with("cores", json!(4_294_967_296_i64))),
            "spec.cores",
            "less than or equal to 128",
        ),
        row(
            "cores a string",
            create(spec_with("cores", json!("2"))),
            "spec.cores",
            "must be of type integer",
        ),
        row(
            "cores a fraction",
            create(spec_with("cores", json!(2.5))),
            "spec.cores",
            "must be of type integer",
        ),
        row(
            "cores a boolean",
            create(spec_with("cores", json!(true))),
            "spec.cores",
            "must be of type integer",
        ),
        // memoryGiB: int32, >= 1.
        row(
            "memoryGiB zero",
            create(spec_with("memoryGiB", json!(0))),
            "spec.memoryGiB",
            "greater than or equal to 1",
        ),
        row(
            "memoryGiB most negative int64",
            create(spec_with("memoryGiB", json!(i64::MIN))),
            "spec.memoryGiB",
            "greater than or equal to 1",
        ),
        row(
            "memoryGiB a string with a unit",
            create(spec_with("memoryGiB", json!("4Gi"))),
            "spec.memoryGiB",
            "must be of type integer",
        ),
        // bootDisk: {sizeGiB: int32 >= 1 (required), storageClass?: string}.
        row(
            "bootDisk without sizeGiB",
            create(spec_with("bootDisk", json!({ "storageClass": "fast" }))),
            "spec.bootDisk.sizeGiB",
            "Required value",
        ),
        row(
            "bootDisk.sizeGiB zero",
            create(spec_with("bootDisk", json!({ "sizeGiB": 0 }))),
            "spec.bootDisk.sizeGiB",
            "greater than or equal to 1",
        ),
        row(
            "bootDisk.sizeGiB a string",
            create(spec_with("bootDisk", json!({ "sizeGiB": "20" }))),
            "spec.bootDisk.sizeGiB",
            "must be of type integer",
        ),
        row(
            "bootDisk.storageClass a number",
            create(spec_with(
                "bootDisk",
                json!({ "sizeGiB": 20, "storageClass": 3 }),
            )),
            "spec.bootDisk.storageClass",
            "must be of type string",
        ),
        row(
            "bootDisk an array",
            create(spec_with("bootDisk", json!([disk]))),
            "spec.bootDisk",
            "must be of type object",
        ),
        // additionalDisks: a list of the bootDisk shape.
        row(
            "additionalDisks an object",
            create(spec_with("additionalDisks", disk.clone())),
            "spec.additionalDisks",
            "must be of type array",
        ),
        row(
            "additionalDisks second item sizeGiB zero",
            create(spec_with(
                "additionalDisks",
                json!([disk, { "sizeGiB": 0 }]),
            )),
            "spec.additionalDisks.sizeGiB",
            "greater than or equal to 1",
        ),
        row(
            "additionalDisks item without sizeGiB",
            create(spec_with(
                "additionalDisks",
                json!([{ "storageClass": "fast" }]),
            )),
            "spec.additionalDisks.sizeGiB",
            "Required value",
        ),
        row(
            "additionalDisks item a string",
            create(spec_with("additionalDisks", json!(["20Gi"]))),
            "spec.additionalDisks",
            "must be of type object",
        ),
        // runStrategy: enum Always, Halted.
        row(
            "runStrategy Running",
            create(spec_with("runStrategy", json!("Running"))),
            "spec.runStrategy",
            "Unsupported value",
        ),
        row(
            "runStrategy in lower case",
            create(spec_with("runStrategy", json!("always"))),
            "spec.runStrategy",
            "Unsupported value",
        ),
        row(
            "runStrategy empty",
            create(spec_with("runStrategy", json!(""))),
            "spec.runStrategy",
            "Unsupported value",
        ),
        // userDataSecretRef: {name: string}, name required.
        row(
            "userDataSecretRef without name",
            create(spec_with("userDataSecretRef", json!({}))),
            "spec.userDataSecretRef.name",
            "Required value",
        ),
        row(
            "userDataSecretRef a string",
            create(spec_with("userDataSecretRef", json!("my-secret"))),
            "spec.userDataSecretRef",
            "must be of type object",
        ),
        row(
            "userDataSecretRef.name a number",
            create(spec_with("userDataSecretRef", json!({ "name": 5 }))),
            "spec.userDataSecretRef.name",
            "must be of type string",
        ),
        // sshKey: string.
        row(
            "sshKey a list of keys",
            create(spec_with("sshKey", json!(["ssh-ed25519 AAAA"]))),
            "spec.sshKey",
            "must be of type string",
        ),
        // restartRequestedAt: RFC 3339 date-time.
        row(
            "restartRequestedAt not a time",
            create(spec_with("restartRequestedAt", json!("yesterday"))),
            "spec.restartRequestedAt",
            "date-time",
        ),
        row(
            "restartRequestedAt a date only",
            create(spec_with("restartRequestedAt", json!("2026-01-02"))),
            "spec.restartRequestedAt",
            "date-time",
        ),
        row(
            "restartRequestedAt a Unix time",
            create(spec_with("restartRequestedAt", json!(1_767_322_800))),
            "spec.restartRequestedAt",
            "must be of type date-time",
        ),
        // Spec updates the schema refuses (no CEL needed).
        row(
            "update removing templateID",
            Op::Update(
                json!({ "templateID": "t", "cores": 2 }),
                json!({ "cores": 2 }),
            ),
            "spec.templateID",
            "Required value",
        ),
        row(
            "update to a hyphenated templateID",
            Op::Update(valid_spec(), json!({ "templateID": "test-template" })),
            "spec.templateID",
            "should match",
        ),
        // Immutable fields (CEL `self == oldSelf`).
        row(
            "update changing image",
            Op::CelUpdate(
                spec_with("image", image.clone()),
                spec_with(
                    "image",
                    json!({ "sourceType": "registry", "sourceRef": "quay.io/other:1" }),
                ),
            ),
            "spec.image",
            "image is immutable",
        ),
        row(
            "update changing cores",
            Op::CelUpdate(spec_with("cores", json!(2)), spec_with("cores", json!(4))),
            "spec.cores",
            "cores is immutable",
        ),
        row(
            "update changing memoryGiB",
            Op::CelUpdate(
                spec_with("memoryGiB", json!(4)),
                spec_with("memoryGiB", json!(8)),
            ),
            "spec.memoryGiB",
            "memoryGiB is immutable",
        ),
        row(
            "update changing bootDisk",
            Op::CelUpdate(
                spec_with("bootDisk", json!({ "sizeGiB": 20 })),
                spec_with("bootDisk", json!({ "sizeGiB": 40 })),
            ),
            "spec.bootDisk",
            "bootDisk is immutable",
        ),
        row(
            "update changing additionalDisks",
            Op::CelUpdate(
                spec_with("additionalDisks", json!([{ "sizeGiB": 5 }])),
                spec_with(
                    "additionalDisks",
                    json!([{ "sizeGiB": 5 }, { "sizeGiB": 6 }]),
                ),
            ),
            "spec.additionalDisks",
            "additionalDisks is immutable",
        ),
        row(
            "update changing userDataSecretRef",
            Op::CelUpdate(
                spec_with("userDataSecretRef", json!({ "name": "a" })),
                spec_with("userDataSecretRef", json!({ "name": "b" })),
            ),
            "spec.userDataSecretRef",
            "userDataSecretRef is immutable",
        ),
        row(
            "update changing sshKey",
            Op::CelUpdate(
                spec_with("sshKey", json!("ssh-ed25519 AAAA1")),
                spec_with("sshKey", json!("ssh-ed25519 AAAA2")),
            ),
            "spec.sshKey",
            "sshKey is immutable",
        ),
        // Status, through the status subresource: jobs (SPEC 2).
        row(
            "job state unknown",
            status_job(job_with("state", Some(json!("Exploded")))),
            "status.jobs.state",
            "Unsupported value",
        ),
        row(
            "job state in lower case",
            status_job(job_with("state", Some(json!("running")))),
            "status.jobs.state",
            "Unsupported value",
        ),
        row(
            "job state missing",
            status_job(job_with("state", None)),
            "status.jobs.state",
            "Required value",
        ),
        row(
            "job type unknown",
            status_job(job_with("type", Some(json!("reprovision")))),
            "status.jobs.type",
            "Unsupported value",
        ),
        row(
            "job type missing",
            status_job(job_with("type", None)),
            "status.jobs.type",
            "Required value",
        ),
        row(
            "job timestamp missing",
            status_job(job_with("timestamp", None)),
            "status.jobs.timestamp",
            "Required value",
        ),
        row(
            "job timestamp not a time",
            status_job(job_with("timestamp", Some(json!("2026-13-45 25:61")))),
            "status.jobs.timestamp",
            "date-time",
        ),
        row(
            "job timestamp a number",
            status_job(job_with("timestamp", Some(json!(1_767_322_800)))),
            "status.jobs.timestamp",
            "must be of type date-time",
        ),
        row(
            "job completionTimestamp not a time",
            status_job(job_with("completionTimestamp", Some(json!("soon")))),
            "status.jobs.completionTimestamp",
            "date-time",
        ),
        row(
            "job jobID a number",
            status_job(job_with("jobID", Some(json!(17)))),
            "status.jobs.jobID",
            "must be of type string",
        ),
        row(
            "job provider unknown",
            status_job(job_with("provider", Some(json!("awx")))),
            "status.jobs.provider",
            "Unsupported value",
        ),
        row(
            "job aapJobKind unknown",
            status_job(job_with("aapJobKind", Some(json!("project_update")))),
            "status.jobs.aapJobKind",
            "Unsupported value",
        ),
        row(
            "job attempt zero",
            status_job(job_with("attempt", Some(json!(0)))),
            "status.jobs.attempt",
            "greater than or equal to 1",
        ),
        row(
            "job blockDeletionOnFailure a string",
            status_job(job_with("blockDeletionOnFailure", Some(json!("yes")))),
            "status.jobs.blockDeletionOnFailure",
            "must be of type boolean",
        ),
        row(
            "job message an object",
            status_job(job_with("message", Some(json!({ "detail": "x" })))),
            "status.jobs.message",
            "must be of type string",
        ),
        row(
            "second job bad, first fine",
            Op::Status(
                json!({ "jobs": [valid_job(), job_with("type", Some(json!("Provision")))] }),
            ),
            "status.jobs.type",
            "Unsupported value",
        ),
        row(
            "jobs an object",
            Op::Status(json!({ "jobs": valid_job() })),
            "status.jobs",
            "must be of type array",
        ),
        row(
            "job a string",
            Op::Status(json!({ "jobs": ["17"] })),
            "status.jobs",
            "must be of type object",
        ),
        // Status: the rest of it (SPEC 1.2).
        row(
            "phase unknown",
            Op::Status(json!({ "phase": "Exploding" })),
            "status.phase",
            "Unsupported value",
        ),
        row(
            "observedGeneration a string",
            Op::Status(json!({ "observedGeneration": "1" })),
            "status.observedGeneration",
            "must be of type integer",
        ),
        row(
            "desiredConfigVersion a number",
            Op::Status(json!({ "desiredConfigVersion": 12 })),
            "status.desiredConfigVersion",
            "must be of type string",
        ),
        row(
            "condition without reason",
            Op::Status(json!({ "conditions": [condition_with("reason", None)] })),
            "status.conditions.reason",
            "Required value",
        ),
        row(
            "condition without type",
            Op::Status(json!({ "conditions": [condition_with("type", None)] })),
            "status.conditions.type",
            "Required value",
        ),
        row(
            "condition lastTransitionTime not a time",
            Op::Status(
                json!({ "conditions": [condition_with("lastTransitionTime", Some(json!("now")))] }),
            ),
            "status.conditions.lastTransitionTime",
            "date-time",
        ),
        row(
            "condition observedGeneration a string",
            Op::Status(
                json!({ "conditions": [condition_with("observedGeneration", Some(json!("2")))] }),
            ),
            "status.conditions.observedGeneration",
            "must be of type integer",
        ),
    ]
}

/// Whether the server enforces CEL `x-kubernetes-validations` (Kubernetes 1.25 or later).
async fn server_enforces_cel(client: &kube::Client) -> Result<bool> {
    let version = client.apiserver_version().await?;
    let major: u32 = version.major.trim_end_matches('+').parse()?;
    let minor: u32 = version.minor.trim_end_matches('+').parse()?;
    Ok(major > 1 || (major == 1 && minor >= 25))
}

/// Sends one row; `Ok(message)` when the server refused it as invalid.
async fn run(api: &Api<DynamicObject>, name: &str, op: &Op) -> Result<String> {
    let pp = PostParams::default();
    match op {
        Op::Create(spec) => invalid_message(api.create(&pp, &raw_ci(name, spec.clone())?).await),
        Op::CreateNamed(bad_name) => invalid_message(
            api.create(&pp, &raw_ci(bad_name, Some(valid_spec()))?)
                .await,
        ),
        Op::Status(status) => {
            api.create(&pp, &raw_ci(name, Some(valid_spec()))?)
                .await
                .context("creating the valid object to patch")?;
            let patch = json!({ "status": status });
            invalid_message(
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )
        }
        Op::Update(before, after) | Op::CelUpdate(before, after) => {
            let mut created = api
                .create(&pp, &raw_ci(name, Some(before.clone()))?)
                .await
                .context("creating the valid object to update")?;
            created.data["spec"] = after.clone();
            invalid_message(api.replace(name, &pp, &created).await)
        }
    }
}

#[tokio::test]
async fn malformed_compute_instances_are_refused_with_the_field_named() -> Result<()> {
    let env = shared();
    let client = env.admin_client().await;
    let ns = env.namespace("malformed").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ci_resource());
    let cel = server_enforces_cel(&client).await?;

    let rows = corpus();
    let mut names = std::collections::HashSet::new();
    for r in &rows {
        ensure!(names.insert(r.name), "duplicate row name {:?}", r.name);
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut skipped = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if matches!(r.op, Op::CelUpdate(..)) && !cel {
            skipped.push(r.name);
            continue;
        }
        let object_name = format!("row-{i}");
        checked += 1;
        match run(&api, &object_name, &r.op).await {
            // "<path>: " is how the server starts each cause: the path must match exactly, not
            // as the prefix of a longer one.
            Ok(message)
                if message.contains(&format!("{}: ", r.path)) && message.contains(r.detail) => {}
            Ok(message) => failures.push(format!(
                "row {i} {:?}: the message does not name {:?} with {:?}: {message}",
                r.name, r.path, r.detail
            )),
            Err(e) => failures.push(format!("row {i} {:?}: {e:#}", r.name)),
        }
    }
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} rows that need CEL (Kubernetes >= 1.25): {skipped:?}",
            skipped.len()
        );
    }
    ensure!(
        failures.is_empty(),
        "{} of {checked} rows failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        env.log_tails()
    );
    ensure!(checked >= 30, "only {checked} rows ran");
    Ok(())
}

/// The CEL rows above are skipped on a server that does not enforce CEL; make sure such a server
/// really accepts the update, so a test environment that starts enforcing CEL cannot go unnoticed
/// with its rows skipped.
#[tokio::test]
async fn immutability_rows_are_skipped_only_where_cel_is_not_enforced() -> Result<()> {
    let env = shared();
    let client = env.admin_client().await;
    if server_enforces_cel(&client).await? {
        return Ok(());
    }
    let ns = env.namespace("malformed-cel").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ci_resource());
    let pp = PostParams::default();
    let mut created = api
        .create(&pp, &raw_ci("vm-1", Some(spec_with("cores", json!(2))))?)
        .await?;
    created.data["spec"] = spec_with("cores", json!(4));
    let replaced = api.replace("vm-1", &pp, &created).await?;
    ensure!(replaced.data["spec"]["cores"] == json!(4), "{replaced:?}");
    Ok(())
}

/// Fields the schema does not know are not refused by this server (no strict field validation
/// before 1.25): they are pruned. A malformed object with an extra job field must therefore not
/// carry it into storage.
#[tokio::test]
async fn unknown_fields_are_pruned_not_stored() -> Result<()> {
    let env = shared();
    let ns = env.namespace("malformed-prune").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.admin_client().await, &ns, &ci_resource());
    let mut spec = valid_spec();
    spec["flavour"] = json!("large");
    api.create(&PostParams::default(), &raw_ci("vm-1", Some(spec))?)
        .await?;
    let patch = json!({ "status": { "jobs": [job_with("token", Some(json!("secret")))] } });
    let patched = api
        .patch_status("vm-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ensure!(patched.data["spec"].get("flavour").is_none(), "{patched:?}");
    let job = &patched.data["status"]["jobs"][0];
    ensure!(job["jobID"] == json!("17"), "{patched:?}");
    ensure!(job.get("token").is_none(), "{patched:?}");
    Ok(())
}
