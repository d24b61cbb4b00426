//! SPEC 7 scenarios 1, 4, 6, 7 and 8 end to end with the AAP provider: the operator binary as the
//! RBAC-limited user, and the AWX simulator in runner mode, where every AAP job runs the real
//! `examples/automation` playbook with ansible-playbook against the test API server. Each CI
//! steers its jobs through `spec.templateParameters` (`sim_provision_running_seconds`,
//! `sim_deprovision_outcome`, ...). Every assertion reads what the API server persisted or what
//! the simulator recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudkit_api::metadata::{
    AAP_FINALIZER, CONDITION_CONFIGURATION_APPLIED, CONDITION_DELETION_BLOCKED, FINALIZER,
    MANAGEMENT_STATE_ANNOTATION, RECONCILED_CONFIG_VERSION_ANNOTATION, RETRY_ANNOTATION,
};
use cloudkit_api::{
    ComputeInstance, ComputeInstanceSpec, JobState, JobType, Phase, ProviderKind, config_version,
};
use cloudkit_test_support::*;
use serde_json::json;

/// The configuration of the current spec is applied: the operator computed it, a provision job
/// launched for it succeeded and the automation reported it.
fn current_config_applied(ci: &ComputeInstance) -> bool {
    let desired = config_version(&ci.spec);
    let status = ci.status.clone().unwrap_or_default();
    status.desired_config_version.as_deref() == Some(desired.as_str())
        && status.reconciled_config_version.as_deref() == Some(desired.as_str())
        && latest(ci, JobType::Provision).is_some_and(|j| {
            j.config_version.as_deref() == Some(desired.as_str()) && j.state == JobState::Succeeded
        })
}

fn annotation(ci: &ComputeInstance, key: &str) -> Option<String> {
    ci.metadata.annotations.as_ref()?.get(key).cloned()
}

fn launches(scene: &Scene, template: &str) -> u64 {
    let stats = scene.sim.as_ref().unwrap().simulator().stats();
    stats
        .launches_by_template
        .get(template)
        .copied()
        .unwrap_or(0)
}

/// Provision launches at the simulator per configuration version they were launched for.
async fn provisions_per_config(scene: &Scene) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for job in sim_jobs(scene.sim.as_ref().unwrap()).await {
        if job["name"] == PROVISION_TEMPLATE {
            let version = launched_config_version(&job).unwrap_or_default();
            *counts.entry(version).or_insert(0) += 1;
        }
    }
    counts
}

/// Processes whose command line mentions `needle` (an AAP job's private directory is in the
/// command line of its ansible-playbook and of every Ansible worker and module it started).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// SPEC 7.1: the provision job carries AAP's numeric id and its persisted state follows the
/// controller, Pending/Waiting -> Running -> Succeeded; the CI turns Running once the playbook
/// has written the annotation, and reconciledConfigVersion equals desiredConfigVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aap_job_states_follow_the_controller_and_ci_reaches_running() {
    let mut scene = Scene::new("e2e-aap-states").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(Scene::aap_operator("operator-states", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    let recorder = scene.record(&ns, "vm-states").await;
    // The playbook's work takes 2 s, several poll intervals: Running is persisted.
    scene
        .create(
            &ns,
            "vm-states",
            spec_with_parameters("e2e_template", json!({"sim_provision_running_seconds": 2})),
        )
        .await;
    let done = scene
        .wait_for(
            &ns,
            "vm-states",
            "phase Running and a succeeded provision job",
            running_and_provisioned,
        )
        .await;
    scene
        .eventually("the watch to see the succeeded job", || async {
            recorder.seen().iter().any(running_and_provisioned)
        })
        .await;

    // Every persisted version of the CI, in order.
    let versions = recorder.seen();
    let mut states: Vec<JobState> = Vec::new();
    let mut ids = Vec::new();
    for ci in &versions {
        if let Some(job) = latest(ci, JobType::Provision).filter(|j| !j.job_id.is_empty()) {
            if states.last() != Some(&job.state) {
                states.push(job.state);
            }
            if !ids.contains(&job.job_id) {
                ids.push(job.job_id);
            }
        }
    }
    let order = [
        JobState::Pending,
        JobState::Waiting,
        JobState::Running,
        JobState::Succeeded,
    ];
    let positions: Vec<Option<usize>> = states
        .iter()
        .map(|s| order.iter().position(|o| o == s))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "states out of order: {states:?}"
    );
    assert!(
        matches!(states.first(), Some(JobState::Pending | JobState::Waiting)),
        "the job was first recorded as AAP queued it: {states:?}"
    );
    assert!(states.contains(&JobState::Running), "{states:?}");
    assert_eq!(states.last(), Some(&JobState::Succeeded), "{states:?}");
    assert_eq!(ids.len(), 1, "one provision job: {ids:?}");

    // Running only with the playbook's annotation in place, Starting before.
    let desired = config_version(&done.spec);
    assert!(
        versions.iter().any(|ci| phase(ci) == Some(Phase::Starting)),
        "Starting before the configuration was applied"
    );
    for ci in versions
        .iter()
        .filter(|ci| phase(ci) == Some(Phase::Running))
    {
        assert_eq!(
            annotation(ci, RECONCILED_CONFIG_VERSION_ANNOTATION).as_deref(),
            Some(desired.as_str()),
            "phase Running before the playbook wrote the annotation: {:?}",
            ci.status
        );
    }

    let status = done.status.clone().unwrap();
    let job = latest(&done, JobType::Provision).unwrap();
    assert!(
        job.job_id.parse::<u64>().is_ok(),
        "AAP's numeric id: {}",
        job.job_id
    );
    assert_eq!(job.provider, Some(ProviderKind::Aap));
    assert_eq!(job.config_version.as_deref(), Some(desired.as_str()));
    assert_eq!(
        status.desired_config_version.as_deref(),
        Some(desired.as_str())
    );
    assert_eq!(
        status.reconciled_config_version,
        status.desired_config_version
    );
    let applied = condition(&done, CONDITION_CONFIGURATION_APPLIED).unwrap();
    assert_eq!(
        (applied.status.as_str(), applied.reason.as_str()),
        ("True", "Applied")
    );
    let finalizers = finalizers(&done);
    assert!(
        finalizers.contains(&FINALIZER.to_string())
            && finalizers.contains(&AAP_FINALIZER.to_string()),
        "{finalizers:?}"
    );

    // The simulator ran that job, with the real playbook, to success.
    let sim = scene.sim.as_ref().unwrap();
    let aap_job = sim_job(sim, &job.job_id).await;
    assert_eq!(aap_job["name"], PROVISION_TEMPLATE, "{aap_job}");
    assert_eq!(aap_job["status"], "successful", "{aap_job}");
    assert_eq!(
        launched_config_version(&aap_job).as_deref(),
        Some(desired.as_str())
    );
    assert!(
        sim_stdout(sim, &job.job_id)
            .await
            .contains("TASK [Report the applied configuration version]"),
        "ansible-playbook ran provision.yml"
    );
    let stats = sim.simulator().stats();
    assert_eq!(
        (stats.launches, stats.runner_processes),
        (1, 1),
        "{stats:?}"
    );

    let events = scene.events("vm-states").await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"JobStarted") && reasons.contains(&"JobSucceeded"),
        "{events:?}"
    );
    scene.assert_no_forbidden();
}

/// SPEC 7.4: a CI deleted while its provision job runs: the job is cancelled (its ansible-playbook
/// interrupted), exactly one deprovision job runs, after the provision job finished, and the CI
/// goes with nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_provision_cancels_then_deprovisions_once() {
    let mut scene = Scene::new("e2e-aap-cancel").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(Scene::aap_operator("operator-cancel", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    scene
        .create(
            &ns,
            "vm-cancel",
            spec_with_parameters("e2e_template", json!({"sim_provision_running_seconds": 30})),
        )
        .await;
    // Mid-provision: the job runs and the playbook has added its finalizer (its first step).
    let ci = scene
        .wait_for(
            &ns,
            "vm-cancel",
            "a running provision job and the automation's finalizer",
            |ci| {
                latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Running)
                    && finalizers(ci).contains(&AAP_FINALIZER.to_string())
            },
        )
        .await;
    let provision_id = latest(&ci, JobType::Provision).unwrap().job_id;
    let sim = scene.sim.as_ref().unwrap();
    scene
        .eventually("the playbook at its 30 s of work", || async {
            sim_stdout(sim, &provision_id)
                .await
                .contains("TASK [Wait as asked by templateParameters]")
        })
        .await;
    let job_dir = sim_job(sim, &provision_id).await["job_cwd"]
        .as_str()
        .expect("the job's directory")
        .to_string();
    assert!(
        !processes_mentioning(&job_dir).is_empty(),
        "ansible-playbook runs in {job_dir}"
    );

    let follower = scene.follow(&ns, "vm-cancel").await;
    scene.delete(&ns, "vm-cancel").await;
    let last = scene.wait_gone(follower).await.ci;

    let sim = scene.sim.as_ref().unwrap();
    assert_eq!(launches(&scene, PROVISION_TEMPLATE), 1);
    assert_eq!(
        launches(&scene, DEPROVISION_TEMPLATE),
        1,
        "exactly one deprovision"
    );
    let stats = sim.simulator().stats();
    assert!(
        stats.cancels >= 1,
        "the provision job was cancelled: {stats:?}"
    );
    assert_eq!(
        stats.runner_running, 0,
        "no ansible-playbook left: {stats:?}"
    );
    assert_eq!(
        processes_mentioning(&job_dir),
        Vec::<String>::new(),
        "nothing of the cancelled run is left"
    );

    // The provision run was interrupted, well before its 30 s of work were done.
    let provision = sim_job(sim, &provision_id).await;
    assert_eq!(provision["status"], "canceled", "{provision}");
    assert_eq!(provision["job_explanation"], "Job was canceled by request.");
    // Its work alone takes 30 s: a run that took less did not finish it.
    let ran = sim_time(&provision, "started").duration_until(sim_time(&provision, "finished"));
    assert!(
        ran < jiff::SignedDuration::from_secs(30),
        "the run was interrupted, not finished: it took {ran:?}"
    );
    let out = sim_stdout(sim, &provision_id).await;
    // Ansible usually reports the interrupt as "User interrupted execution"; when SIGINT lands
    // inside a handler whose exceptions Python ignores, it only prints the KeyboardInterrupt and
    // the simulator's SIGKILL after the grace period ends the run.
    assert!(
        (out.contains("User interrupted execution") || out.contains("KeyboardInterrupt"))
            && !out.contains("TASK [Report the applied configuration version]"),
        "stopped in the middle of its work:\n{out}"
    );
    assert_eq!(
        annotation(&last, RECONCILED_CONFIG_VERSION_ANNOTATION),
        None,
        "the cancelled run reported no configuration"
    );

    // Never both at once: the deprovision job was launched after the provision job finished.
    let deprovision = sim_jobs(sim)
        .await
        .into_iter()
        .find(|j| j["name"] == DEPROVISION_TEMPLATE)
        .expect("the deprovision job");
    assert_eq!(deprovision["status"], "successful", "{deprovision}");
    let finished = sim_time(&provision, "finished");
    let created = sim_time(&deprovision, "created");
    assert!(
        created >= finished,
        "deprovision launched at {created} before the provision job finished at {finished}"
    );

    // The operator's record agrees: the provision job Canceled, then that one deprovision job.
    let recorded = latest(&last, JobType::Provision).unwrap();
    assert_eq!(
        (recorded.job_id.as_str(), recorded.state),
        (provision_id.as_str(), JobState::Canceled),
        "{:?}",
        jobs(&last)
    );
    let recorded = latest(&last, JobType::Deprovision).expect("the deprovision job recorded");
    assert_eq!(
        recorded.job_id,
        deprovision["id"].to_string(),
        "{:?}",
        jobs(&last)
    );
    assert_eq!(jobs(&last).len(), 2, "{:?}", jobs(&last));
    scene.assert_no_forbidden();
}

/// SPEC 7.6: a failed AAP deprovision blocks the deletion (condition, Warning event, the CI
/// stays, no automatic repeat); annotation `retry` runs deprovision again, and
/// `management-state: manual` releases the CI without deprovisioning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_deletion_is_released_by_each_escape_hatch() {
    let mut scene = Scene::new("e2e-aap-blocked").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(Scene::aap_operator("operator-blocked", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    let names = ["vm-retry", "vm-manual"];
    let failing =
        json!({"sim_deprovision_outcome": "failed", "sim_message": "hypervisor unreachable"});
    for name in names {
        scene
            .create(
                &ns,
                name,
                spec_with_parameters("e2e_template", failing.clone()),
            )
            .await;
    }
    for name in names {
        scene
            .wait_for(&ns, name, "phase Running", running_and_provisioned)
            .await;
    }
    for name in names {
        scene.delete(&ns, name).await;
    }
    for name in names {
        let ci = scene
            .wait_for(&ns, name, "DeletionBlocked=True", |ci| {
                condition(ci, CONDITION_DELETION_BLOCKED).is_some_and(|c| c.status == "True")
            })
            .await;
        let blocked = condition(&ci, CONDITION_DELETION_BLOCKED).unwrap();
        assert!(
            blocked.message.contains(RETRY_ANNOTATION)
                && blocked
                    .message
                    .contains(&format!("{MANAGEMENT_STATE_ANNOTATION}=manual")),
            "the message names both escape hatches: {}",
            blocked.message
        );
        assert!(
            blocked.message.contains("hypervisor unreachable"),
            "the message says why: {}",
            blocked.message
        );
        let deprovision = latest(&ci, JobType::Deprovision).unwrap();
        assert_eq!(
            (deprovision.state, deprovision.block_deletion_on_failure),
            (JobState::Failed, Some(true)),
            "{deprovision:?}"
        );
        assert_eq!(phase(&ci), Some(Phase::Deleting));
        assert_eq!(finalizers(&ci), [FINALIZER, AAP_FINALIZER]);
    }
    for name in names {
        scene
            .eventually("a DeletionBlocked Warning event", || async {
                scene.events(name).await.iter().any(|(t, r, note)| {
                    t == "Warning" && r == "DeletionBlocked" && note.contains(RETRY_ANNOTATION)
                })
            })
            .await;
    }
    // /metrics counts them, from the controller's cache (an alert of deploy/monitoring/).
    scene
        .eventually("cloudkit_deletions_blocked 2", || async {
            scene.metrics(0).await.get("cloudkit_deletions_blocked") == Some(&2.0)
        })
        .await;
    // The block holds across several poll intervals, without another deprovision.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in names {
        let ci = scene.api_in(&ns).get(name).await.unwrap();
        assert!(ci.metadata.deletion_timestamp.is_some());
        assert_eq!(
            jobs(&ci)
                .iter()
                .filter(|j| j.job_type == JobType::Deprovision)
                .count(),
            1,
            "{name}: {:?}",
            jobs(&ci)
        );
    }
    assert_eq!(
        launches(&scene, DEPROVISION_TEMPLATE),
        2,
        "one deprovision per deletion, no automatic repeats"
    );

    // Hatch 1: the automation is fixed (here: templateParameters), and a retry is requested.
    let follower = scene.follow(&ns, "vm-retry").await;
    scene
        .merge_patch(
            &ns,
            "vm-retry",
            json!({
                "metadata": {"annotations": {RETRY_ANNOTATION: "1"}},
                "spec": {"templateParameters": "{\"sim_deprovision_outcome\": \"successful\"}"},
            }),
        )
        .await;
    let last = scene.wait_gone(follower).await.ci;
    assert_eq!(
        launches(&scene, DEPROVISION_TEMPLATE),
        3,
        "the retry ran one more deprovision"
    );
    let deprovisions: Vec<_> = jobs(&last)
        .into_iter()
        .filter(|j| j.job_type == JobType::Deprovision)
        .collect();
    assert_eq!(deprovisions.len(), 2, "{deprovisions:?}");
    assert_eq!(deprovisions[0].state, JobState::Failed);
    let retried = sim_job(scene.sim.as_ref().unwrap(), &deprovisions[1].job_id).await;
    assert_eq!(retried["name"], DEPROVISION_TEMPLATE);
    assert_eq!(retried["status"], "successful", "{retried}");

    // Hatch 2: manual. The operator lets go without deprovisioning; the automation's finalizer
    // stays for whoever cleans the VM up.
    scene
        .merge_patch(
            &ns,
            "vm-manual",
            json!({"metadata": {"annotations": {MANAGEMENT_STATE_ANNOTATION: "manual"}}}),
        )
        .await;
    let ci = scene
        .wait_for(
            &ns,
            "vm-manual",
            "the operator's finalizer released",
            |ci| !finalizers(ci).contains(&FINALIZER.to_string()),
        )
        .await;
    assert_eq!(finalizers(&ci), [AAP_FINALIZER]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        launches(&scene, DEPROVISION_TEMPLATE),
        3,
        "manual ran no deprovision"
    );
    // The cleanup the automation's owner would do.
    let follower = scene.follow(&ns, "vm-manual").await;
    scene
        .merge_patch(&ns, "vm-manual", json!({"metadata": {"finalizers": null}}))
        .await;
    scene.wait_gone(follower).await;
    assert_eq!(sim_jobs(scene.sim.as_ref().unwrap()).await.len(), 5);
    scene.assert_no_forbidden();
}

/// SPEC 7.7: with `CLOUDKIT_MAX_JOB_HISTORY=3`, four configurations applied one after another:
/// no persisted version of the CI holds more than three jobs, and the simulator ran one
/// provision per configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_stays_bounded_across_reprovisions() {
    let mut scene = Scene::new("e2e-aap-history").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(
            Scene::aap_operator("operator-history", &ns, &sim).env("CLOUDKIT_MAX_JOB_HISTORY", "3"),
        )
        .await;
    scene.sim = Some(sim);
    let recorder = scene.record(&ns, "vm-history").await;
    scene
        .create(
            &ns,
            "vm-history",
            spec_with_parameters("e2e_template", json!({"round": 0})),
        )
        .await;
    let rounds = 4;
    let mut versions = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            let parameters = json!({"round": round}).to_string();
            scene
                .merge_patch(
                    &ns,
                    "vm-history",
                    json!({"spec": {"templateParameters": parameters}}),
                )
                .await;
        }
        let ci = scene
            .wait_for(
                &ns,
                "vm-history",
                &format!("configuration {round} applied"),
                current_config_applied,
            )
            .await;
        assert!(jobs(&ci).len() <= 3, "round {round}: {:?}", jobs(&ci));
        versions.push(config_version(&ci.spec));
    }

    let seen = recorder.seen();
    let longest = seen.iter().map(|ci| jobs(ci).len()).max().unwrap_or(0);
    assert_eq!(
        longest,
        3,
        "the longest history of {} persisted versions",
        seen.len()
    );
    let ci = scene.api_in(&ns).get("vm-history").await.unwrap();
    let history = jobs(&ci);
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history
            .iter()
            .all(|j| j.job_type == JobType::Provision && j.state == JobState::Succeeded),
        "{history:?}"
    );
    // The three newest configurations are the ones kept.
    let kept: Vec<_> = history
        .iter()
        .filter_map(|j| j.config_version.clone())
        .collect();
    assert_eq!(kept, versions[rounds - 3..], "{history:?}");

    let per_config = provisions_per_config(&scene).await;
    let expected: BTreeMap<String, usize> = versions.iter().map(|v| (v.clone(), 1)).collect();
    assert_eq!(per_config, expected, "one provision per configuration");
    assert_eq!(launches(&scene, DEPROVISION_TEMPLATE), 0);
    scene.assert_no_forbidden();
}

/// SPEC 7.8: a restart request (`spec.restartRequestedAt`) is not a new configuration: no job;
/// a spec change re-provisions exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_reprovisions_once_and_restart_request_does_not() {
    let mut scene = Scene::new("e2e-aap-respec").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(Scene::aap_operator("operator-respec", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    scene
        .create(
            &ns,
            "vm-respec",
            ComputeInstanceSpec::for_template("e2e_template"),
        )
        .await;
    let first = scene
        .wait_for(&ns, "vm-respec", "phase Running", running_and_provisioned)
        .await;
    let first_version = config_version(&first.spec);

    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    scene
        .merge_patch(
            &ns,
            "vm-respec",
            json!({"spec": {"restartRequestedAt": now}}),
        )
        .await;
    let ci = scene
        .wait_for(&ns, "vm-respec", "the restart request observed", |ci| {
            ci.spec.restart_requested_at.is_some()
                && ci.status.as_ref().and_then(|s| s.observed_generation) == ci.metadata.generation
        })
        .await;
    // Several poll intervals later, still nothing new.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ci = scene.api_in(&ns).get("vm-respec").await.unwrap_or(ci);
    let status = ci.status.clone().unwrap();
    assert_eq!(
        status.desired_config_version.as_deref(),
        Some(first_version.as_str()),
        "a restart request is not a new configuration"
    );
    assert_eq!(jobs(&ci).len(), 1, "{:?}", jobs(&ci));
    assert_eq!(phase(&ci), Some(Phase::Running));
    assert_eq!(launches(&scene, PROVISION_TEMPLATE), 1);

    scene
        .merge_patch(
            &ns,
            "vm-respec",
            json!({"spec": {"templateParameters": "{\"size\": \"large\"}"}}),
        )
        .await;
    let ci = scene
        .wait_for(
            &ns,
            "vm-respec",
            "the new configuration applied",
            current_config_applied,
        )
        .await;
    let second_version = config_version(&ci.spec);
    assert_ne!(first_version, second_version);
    assert_eq!(phase(&ci), Some(Phase::Running));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ci = scene.api_in(&ns).get("vm-respec").await.unwrap();
    let provisions: Vec<_> = jobs(&ci)
        .into_iter()
        .filter(|j| j.job_type == JobType::Provision)
        .map(|j| (j.config_version.unwrap_or_default(), j.state))
        .collect();
    assert_eq!(
        provisions,
        [
            (first_version.clone(), JobState::Succeeded),
            (second_version.clone(), JobState::Succeeded)
        ]
    );
    let per_config = provisions_per_config(&scene).await;
    assert_eq!(
        per_config,
        BTreeMap::from([(first_version, 1), (second_version, 1)]),
        "exactly one re-provision"
    );
    assert_eq!(launches(&scene, DEPROVISION_TEMPLATE), 0);
    scene.assert_no_forbidden();
}
