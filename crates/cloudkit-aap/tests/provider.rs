//! `AapProvider` against a wiremock AWX: launch bodies, job kinds, the status table, purged
//! jobs, cancellation and finding a lost launch again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cloudkit_aap::*;
use cloudkit_api::{AapJobKind, JobState, JobType, ProviderKind};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, JobObservation, Launch, LaunchLookup, Provider,
    ProviderErrorKind,
};
use common::*;
use serde_json::json;
use wiremock::matchers::{any, bearer_token, body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn identity() {
    let server = MockServer::start().await;
    let p = provider(&server);
    assert_eq!(p.kind(), ProviderKind::Aap);
    assert!(p.polls_remotely());
    assert!(p.can_cancel());
    assert!(p.can_find_launches());
    assert!(p.blocks_deletion_on_failure());
    assert_eq!(p.poll_interval(), DEFAULT_POLL_INTERVAL);
    assert_eq!(p.template_for(JobType::Provision), PROVISION);
    assert_eq!(p.template_for(JobType::Deprovision), DEPROVISION);
}

#[tokio::test]
async fn provision_launches_with_the_ci_as_eda_payload() {
    for prefix in [AWX, GATEWAY] {
        let server = MockServer::start().await;
        template_page(&server, prefix, "job_templates", PROVISION, &[7]).await;
        let ci = ci();
        let expected = json!({
            "extra_vars": {
                "ansible_eda": {"event": {"payload": serde_json::to_value(&ci).unwrap()}},
                "cloudkit_launch_key": "tenant-a/vm-1/provision/c15f/1"
            }
        });
        // The payload is the whole object, exactly as the API server has it.
        assert_eq!(
            expected["extra_vars"]["ansible_eda"]["event"]["payload"]["metadata"]["name"],
            "vm-1"
        );
        assert_eq!(
            expected["extra_vars"]["ansible_eda"]["event"]["payload"]["spec"]["templateID"],
            "osac.templates.ocp_virt_vm"
        );
        Mock::given(method("POST"))
            .and(path(format!("{prefix}/v2/job_templates/7/launch/")))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(header("accept", "application/json"))
            .and(header("content-type", "application/json"))
            .and(body_json(expected))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(launch_answer(42, AapJobKind::Job)),
            )
            .expect(1)
            .mount(&server)
            .await;
        let p = AapProvider::new(&config(&server, prefix)).unwrap();
        let launch = Launch::new(JobType::Provision, "tenant-a/vm-1/provision/c15f/1");
        let started = p.provision(&ci, &launch).await.unwrap();
        assert_eq!(started.job_id, "42");
        assert_eq!(started.state, JobState::Pending);
        assert_eq!(started.aap_job_kind, Some(AapJobKind::Job));
        assert!(!started.block_deletion_on_failure);
        assert!(started.message.unwrap().contains(PROVISION));
    }
}

#[tokio::test]
async fn an_empty_launch_key_is_left_out() {
    let server = MockServer::start().await;
    job_template(&server, PROVISION, 7).await;
    let ci = ci();
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/7/launch/"))
        .and(body_json(json!({"extra_vars": {
            "ansible_eda": {"event": {"payload": serde_json::to_value(&ci).unwrap()}}
        }})))
        .respond_with(ResponseTemplate::new(201).set_body_json(launch_answer(1, AapJobKind::Job)))
        .expect(1)
        .mount(&server)
        .await;
    provider(&server)
        .provision(&ci, &Launch::new(JobType::Provision, ""))
        .await
        .unwrap();
}

#[tokio::test]
async fn deprovision_uses_its_template_and_blocks_deletion_on_failure() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", DEPROVISION, &[]).await;
    template_page(&server, AWX, "workflow_job_templates", DEPROVISION, &[12]).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/workflow_job_templates/12/launch/"))
        .and(bearer_token(TOKEN))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(launch_answer(88, AapJobKind::WorkflowJob)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let outcome = provider(&server)
        .deprovision(&ci(), &Launch::new(JobType::Deprovision, "k"))
        .await
        .unwrap();
    let DeprovisionOutcome::Started(started) = outcome else {
        panic!("expected a started job, got {outcome:?}");
    };
    assert_eq!(started.job_id, "88");
    assert_eq!(started.aap_job_kind, Some(AapJobKind::WorkflowJob));
    assert!(started.block_deletion_on_failure);
}

#[tokio::test]
async fn initial_state_comes_from_the_launch_answer() {
    let rows = [
        (Some("pending"), JobState::Pending),
        (Some("new"), JobState::Pending),
        (Some("waiting"), JobState::Waiting),
        (Some("running"), JobState::Running),
        (Some("mystery"), JobState::Unknown),
        (None, JobState::Pending),
    ];
    for (status, want) in rows {
        let server = MockServer::start().await;
        job_template(&server, PROVISION, 7).await;
        let mut answer = launch_answer(5, AapJobKind::Job);
        match status {
            Some(s) => answer["status"] = json!(s),
            None => {
                answer.as_object_mut().unwrap().remove("status");
            }
        }
        Mock::given(method("POST"))
            .and(path("/api/v2/job_templates/7/launch/"))
            .respond_with(ResponseTemplate::new(201).set_body_json(answer))
            .mount(&server)
            .await;
        let started = provider(&server)
            .provision(&ci(), &Launch::new(JobType::Provision, "k"))
            .await
            .unwrap();
        assert_eq!(started.state, want, "{status:?}");
    }
}

#[tokio::test]
async fn launch_errors_surface_typed() {
    let rows = [
        (401, ProviderErrorKind::Auth),
        (403, ProviderErrorKind::Auth),
        (409, ProviderErrorKind::NotAllowed),
        (500, ProviderErrorKind::Transport),
    ];
    for (status, kind) in rows {
        let server = MockServer::start().await;
        job_template(&server, PROVISION, 7).await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .expect(1)
            .mount(&server)
            .await;
        let err = provider(&server)
            .provision(&ci(), &Launch::new(JobType::Provision, "k"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "HTTP {status}: {err}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn template_without_prompt_on_launch_is_a_configuration_error() {
    let server = MockServer::start().await;
    job_template(&server, PROVISION, 7).await;
    let mut answer = launch_answer(42, AapJobKind::Job);
    answer["ignored_fields"] = json!({"extra_vars": {"cloudkit_launch_key": "k"}});
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/7/launch/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(answer))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/jobs/42/cancel/"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let err = provider(&server)
        .provision(&ci(), &Launch::new(JobType::Provision, "k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration);
    assert!(err.to_string().contains("Prompt on launch"), "{err}");
    assert!(err.to_string().contains(PROVISION), "{err}");
}

/// One row of the AWX status table (SPEC 4.2).
struct StatusRow {
    status: &'static str,
    traceback: Option<&'static str>,
    explanation: Option<&'static str>,
    state: JobState,
    /// Text the message must contain; `None` when there must be no message.
    message: Option<&'static str>,
}

#[tokio::test]
async fn job_state_maps_awx_statuses() {
    let rows = [
        StatusRow {
            status: "new",
            traceback: None,
            explanation: None,
            state: JobState::Pending,
            message: None,
        },
        StatusRow {
            status: "pending",
            traceback: None,
            explanation: None,
            state: JobState::Pending,
            message: None,
        },
        StatusRow {
            status: "waiting",
            traceback: None,
            explanation: None,
            state: JobState::Waiting,
            message: None,
        },
        StatusRow {
            status: "running",
            traceback: Some(""),
            explanation: Some(""),
            state: JobState::Running,
            message: None,
        },
        StatusRow {
            status: "successful",
            traceback: Some(""),
            explanation: None,
            state: JobState::Succeeded,
            message: None,
        },
        StatusRow {
            status: "failed",
            traceback: Some("fatal: VM quota exceeded\n  at line 2\n"),
            explanation: Some("ignored"),
            state: JobState::Failed,
            message: Some("failed: fatal: VM quota exceeded"),
        },
        StatusRow {
            status: "failed",
            traceback: Some(""),
            explanation: Some("Previous Task Failed: {\"job_type\": \"project_update\"}"),
            state: JobState::Failed,
            message: Some("Previous Task Failed"),
        },
        StatusRow {
            status: "failed",
            traceback: None,
            explanation: None,
            state: JobState::Failed,
            message: Some("AAP job 42 failed"),
        },
        StatusRow {
            status: "error",
            traceback: Some(
                "Traceback (most recent call last):\n  File \"x.py\"\nRuntimeError: no space\n",
            ),
            explanation: None,
            state: JobState::Failed,
            message: Some("RuntimeError: no space"),
        },
        StatusRow {
            status: "canceled",
            traceback: None,
            explanation: Some("Canceled by user"),
            state: JobState::Canceled,
            message: Some("Canceled by user"),
        },
        StatusRow {
            status: "canceled",
            traceback: None,
            explanation: None,
            state: JobState::Canceled,
            message: Some("was canceled"),
        },
        StatusRow {
            status: "paused",
            traceback: None,
            explanation: None,
            state: JobState::Unknown,
            message: Some("\"paused\""),
        },
        StatusRow {
            status: "",
            traceback: None,
            explanation: None,
            state: JobState::Unknown,
            message: Some("status"),
        },
    ];
    for row in rows {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/jobs/42/"))
            .and(bearer_token(TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 42, "type": "job", "status": row.status,
                "started": null, "finished": null,
                "result_traceback": row.traceback, "job_explanation": row.explanation,
            })))
            .expect(1)
            .mount(&server)
            .await;
        let job = recorded("42", JobType::Provision, Some(AapJobKind::Job));
        let seen = provider(&server).job_state(&ci(), &job).await.unwrap();
        assert_eq!(seen.state, row.state, "{}", row.status);
        match (row.message, &seen.message) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.contains(want), "{}: {got:?} lacks {want:?}", row.status);
                assert!(!got.contains('\n'), "{got:?}");
            }
            (want, got) => panic!("{}: message {got:?}, want {want:?}", row.status),
        }
    }
}

#[test]
fn status_table_is_exact() {
    let rows = [
        ("new", JobState::Pending),
        ("pending", JobState::Pending),
        ("waiting", JobState::Waiting),
        ("running", JobState::Running),
        ("successful", JobState::Succeeded),
        ("failed", JobState::Failed),
        ("error", JobState::Failed),
        ("canceled", JobState::Canceled),
        ("cancelled", JobState::Unknown),
        ("Running", JobState::Unknown),
        ("never updated", JobState::Unknown),
        ("", JobState::Unknown),
    ];
    for (status, state) in rows {
        assert_eq!(map_status(status), state, "{status:?}");
    }
}

#[tokio::test]
async fn long_tracebacks_make_short_messages() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/jobs/42/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 42, "status": "failed", "result_traceback": "E".repeat(50_000),
        })))
        .mount(&server)
        .await;
    let job = recorded("42", JobType::Provision, None);
    let seen = provider(&server).job_state(&ci(), &job).await.unwrap();
    assert_eq!(seen.state, JobState::Failed);
    assert!(seen.message.unwrap().len() <= 1024);
}

#[tokio::test]
async fn workflow_jobs_are_polled_and_cancelled_under_workflow_jobs() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_jobs/55/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 55, "status": "running"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/workflow_jobs/55/cancel/"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let p = provider(&server);
    let job = recorded("55", JobType::Provision, Some(AapJobKind::WorkflowJob));
    assert_eq!(
        p.job_state(&ci(), &job).await.unwrap(),
        JobObservation::new(JobState::Running)
    );
    assert_eq!(p.cancel(&job).await.unwrap(), CancelOutcome::Requested);
}

#[tokio::test]
async fn jobs_without_a_recorded_kind_are_jobs() {
    // Entries written by the Go operator carry no kind.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/jobs/9076/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 9076, "status": "successful"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/jobs/9076/cancel/"))
        .respond_with(ResponseTemplate::new(405))
        .expect(1)
        .mount(&server)
        .await;
    let p = provider(&server);
    let job = recorded("9076", JobType::Deprovision, None);
    assert_eq!(
        p.job_state(&ci(), &job).await.unwrap().state,
        JobState::Succeeded
    );
    assert_eq!(
        p.cancel(&job).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
}

#[tokio::test]
async fn a_purged_job_is_failed_for_good() {
    for kind in [AapJobKind::Job, AapJobKind::WorkflowJob] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/api/v2/{}/31/", job_collection(kind))))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
            .expect(1)
            .mount(&server)
            .await;
        let job = recorded("31", JobType::Provision, Some(kind));
        let seen = provider(&server).job_state(&ci(), &job).await.unwrap();
        assert_eq!(seen.state, JobState::Failed);
        let message = seen.message.unwrap();
        assert!(message.contains("AAP no longer has"), "{message}");
        assert!(message.contains("31"), "{message}");
    }
}

#[tokio::test]
async fn job_state_errors_are_typed() {
    let rows = [
        (401, ProviderErrorKind::Auth),
        (403, ProviderErrorKind::Auth),
        (429, ProviderErrorKind::RateLimited),
        (500, ProviderErrorKind::Transport),
    ];
    for (status, kind) in rows {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let job = recorded("1", JobType::Provision, None);
        let err = provider(&server).job_state(&ci(), &job).await.unwrap_err();
        assert_eq!(err.kind(), kind, "HTTP {status}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn bogus_job_ids_never_reach_the_server() {
    let server = MockServer::start().await;
    let p = provider(&server);
    for id in [
        "",
        "abc",
        "-1",
        "0",
        "1 2",
        " 12",
        "12a",
        "1/../2",
        "eda-webhook-3",
        "99999999999999999999999",
    ] {
        let job = recorded(id, JobType::Provision, Some(AapJobKind::Job));
        let err = p.job_state(&ci(), &job).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ProviderErrorKind::Configuration,
            "{id:?}: {err}"
        );
        let err = p.cancel(&job).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ProviderErrorKind::Configuration,
            "{id:?}: {err}"
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

fn job_vars(key: &str) -> String {
    json!({"ansible_eda": {"event": {"payload": {}}}, "cloudkit_launch_key": key}).to_string()
}

#[tokio::test]
async fn find_launch_finds_the_job_by_its_launch_key() {
    let server = MockServer::start().await;
    job_template(&server, PROVISION, 7).await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/7/jobs/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 2, "results": [
                {"id": 201, "status": "pending", "extra_vars": job_vars("other")},
                {"id": 200, "status": "running", "extra_vars": job_vars("tenant-a/vm-1/provision/c15f/1")},
            ]
        })))
        .mount(&server)
        .await;
    let p = provider(&server);
    let mut job = recorded("", JobType::Provision, None);
    job.launch_key = Some("tenant-a/vm-1/provision/c15f/1".into());
    let LaunchLookup::Found(found) = p.find_launch(&ci(), &job).await.unwrap() else {
        panic!("not found");
    };
    assert_eq!(found.job_id, "200");
    assert_eq!(found.state, JobState::Running);
    assert_eq!(found.aap_job_kind, Some(AapJobKind::Job));
    assert!(!found.block_deletion_on_failure);

    job.launch_key = Some("tenant-a/vm-1/provision/c15f/2".into());
    assert_eq!(
        p.find_launch(&ci(), &job).await.unwrap(),
        LaunchLookup::NotFound
    );
}

#[tokio::test]
async fn find_launch_of_a_deprovision_fetches_workflow_job_details() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", DEPROVISION, &[]).await;
    template_page(&server, AWX, "workflow_job_templates", DEPROVISION, &[12]).await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_job_templates/12/workflow_jobs/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1, "results": [{"id": 300, "status": "failed"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_jobs/300/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 300, "status": "failed", "result_traceback": "boom",
            "extra_vars": job_vars("del-1"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut job = recorded("", JobType::Deprovision, None);
    job.launch_key = Some("del-1".into());
    let LaunchLookup::Found(found) = provider(&server).find_launch(&ci(), &job).await.unwrap()
    else {
        panic!("not found");
    };
    assert_eq!(found.job_id, "300");
    assert_eq!(found.state, JobState::Failed);
    assert!(found.message.unwrap().contains("boom"));
    assert_eq!(found.aap_job_kind, Some(AapJobKind::WorkflowJob));
    assert!(found.block_deletion_on_failure);
}

#[tokio::test]
async fn find_launch_without_a_key_cannot_tell() {
    let server = MockServer::start().await;
    let p = provider(&server);
    for key in [None, Some(String::new())] {
        let mut job = recorded("", JobType::Provision, None);
        job.launch_key = key;
        assert_eq!(
            p.find_launch(&ci(), &job).await.unwrap(),
            LaunchLookup::Unknowable
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn find_launch_errors_are_typed() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", PROVISION, &[]).await;
    template_page(&server, AWX, "workflow_job_templates", PROVISION, &[]).await;
    let mut job = recorded("", JobType::Provision, None);
    job.launch_key = Some("k".into());
    let err = provider(&server)
        .find_launch(&ci(), &job)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration);
}
