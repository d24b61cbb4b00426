//! SPEC 9.4 (tenants), 10 (availability), 11 (restart) and 12 (conditions) as rows of the pure
//! decision function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudkit_api::metadata::*;
use cloudkit_api::{
    ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, JobState, JobType, Phase,
    ProviderKind, TenantPhase, TenantReference, VirtualMachineReference,
};
use cloudkit_provider::JobObservation;
use cloudkit_reconciler::restart::VmiState;
use cloudkit_reconciler::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

const T0: i64 = 1_800_000_000;
const TENANT: &str = "tenant-a4snha7u63pa6";
const TENANT_NS: &str = "ns-a4snha7u63pa6";

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn settings() -> Settings {
    Settings {
        history_limit: 10,
        retry_limit: 3,
        poll_interval: Duration::from_secs(30),
        eda_grace: Duration::from_secs(300),
        launch_window: Duration::from_secs(35),
        restart_timeout: Duration::from_secs(600),
        active: ProviderKind::Aap,
        providers: BTreeMap::from([(
            ProviderKind::Aap,
            Capabilities {
                polls_remotely: true,
                can_cancel: true,
                can_find_launches: true,
                blocks_deletion_on_failure: true,
            },
        )]),
    }
}

fn ci() -> ComputeInstance {
    let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    ci.metadata.namespace = Some("ns".into());
    ci.metadata.uid = Some("uid-1".into());
    ci.metadata.generation = Some(1);
    ci.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ci
}

fn tenant(phase: Option<TenantPhase>, owned: bool) -> TenantView {
    TenantView::Present(TenantState {
        name: TENANT.into(),
        namespace: "ns".into(),
        phase,
        message: Some("namespace being created".into()),
        tenant_namespace: Some(TENANT_NS.into()),
        owned_by_ci: owned,
    })
}

fn ready_tenant() -> Option<TenantView> {
    Some(tenant(Some(TenantPhase::Ready), true))
}

fn with_tenant(view: Option<TenantView>) -> Observed {
    Observed {
        tenant: view,
        ..Observed::default()
    }
}

fn condition(plan: &Plan, type_: &str) -> Option<(String, String, String)> {
    let st = plan.status.as_ref()?;
    find_condition(&st.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn launches(plan: &Plan) -> bool {
    matches!(plan.call, Some(ProviderCall::Launch { .. }))
}

/// The status the plan writes, as the next pass reads it.
fn after(mut c: ComputeInstance, plan: &Plan) -> ComputeInstance {
    if let Some(st) = &plan.status {
        c.status = Some(st.clone());
    }
    c
}

#[test]
fn no_job_before_the_tenant_is_ready() {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        &str,
        TenantView,
        Option<TenantChange>,
        bool,
        &str,
        Option<&str>,
        bool,
    )> = vec![
        (
            "no annotation: TenantMissing and a Warning",
            TenantView::Unnamed,
            None,
            false,
            reason::TENANT_MISSING,
            Some(reason::TENANT_MISSING),
            false,
        ),
        (
            "the Tenant does not exist: create it, owned by the CI",
            TenantView::Missing {
                name: TENANT.into(),
                tenant_name: "acme".into(),
            },
            Some(TenantChange::Create {
                name: TENANT.into(),
                tenant_name: "acme".into(),
            }),
            false,
            reason::TENANT_NOT_READY,
            None,
            true,
        ),
        (
            "another CI's Tenant: adopt it",
            tenant(Some(TenantPhase::Progressing), false),
            Some(TenantChange::Own {
                name: TENANT.into(),
            }),
            false,
            reason::TENANT_NOT_READY,
            None,
            true,
        ),
        (
            "a failed Tenant: TenantFailed with its message and a Warning",
            tenant(Some(TenantPhase::Failed), true),
            None,
            false,
            reason::TENANT_FAILED,
            Some(reason::TENANT_FAILED),
            true,
        ),
        (
            "a Ready Tenant: the provision starts",
            tenant(Some(TenantPhase::Ready), true),
            None,
            true,
            reason::TENANT_READY,
            None,
            false,
        ),
    ];
    for (name, view, change, accepted, want_reason, event, soon) in rows {
        let plan = decide(&ci(), &with_tenant(Some(view)), at(0), &settings());
        assert_eq!(plan.tenant, change, "{name}");
        assert_eq!(launches(&plan), accepted, "{name}");
        let (status, reason, message) = condition(&plan, CONDITION_ACCEPTED).expect(name);
        assert_eq!(status, if accepted { "True" } else { "False" }, "{name}");
        assert_eq!(reason, want_reason, "{name}");
        assert!(!message.is_empty(), "{name}");
        let warnings: Vec<&str> = plan
            .events
            .iter()
            .filter(|e| e.type_ == EventType::Warning)
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(warnings, event.into_iter().collect::<Vec<_>>(), "{name}");
        if !accepted {
            let applied = condition(&plan, CONDITION_CONFIGURATION_APPLIED).expect(name);
            assert_eq!(
                applied.1, want_reason,
                "{name}: ConfigurationApplied says why"
            );
        }
        // Waiting for a Tenant on its way is bounded by a short requeue.
        assert_eq!(
            plan.requeue_after
                .is_some_and(|d| d <= Duration::from_secs(2)),
            soon,
            "{name}: {:?}",
            plan.requeue_after
        );
    }
}

/// A new CI whose Tenant is being set up is not written for the first seconds: the pass that
/// finds the Tenant Ready then adds the finalizer with the first intent in one write. A CI that
/// names no tenant, whose Tenant failed, that is older than the period, or whose status was
/// written before, shows why it waits at once.
#[test]
fn a_new_ci_waits_quietly_for_a_tenant_being_set_up() {
    let fresh = |age: i64, written: bool| {
        let mut c = ci();
        c.metadata.finalizers = None;
        c.metadata.creation_timestamp = Some(Time(at(-age)));
        if written {
            c.status = Some(ComputeInstanceStatus {
                phase: Some(Phase::Starting),
                desired_config_version: Some("v".into()),
                ..ComputeInstanceStatus::default()
            });
        }
        c
    };
    let missing = TenantView::Missing {
        name: TENANT.into(),
        tenant_name: "acme".into(),
    };
    let progressing = tenant(Some(TenantPhase::Progressing), false);
    // (row, CI age in seconds, status written before, tenant, quiet)
    let rows: Vec<(&str, i64, bool, TenantView, bool)> = vec![
        (
            "Tenant created by this pass",
            0,
            false,
            missing.clone(),
            true,
        ),
        (
            "another CI's Tenant on its way",
            4,
            false,
            progressing.clone(),
            true,
        ),
        (
            "older than the period",
            5,
            false,
            progressing.clone(),
            false,
        ),
        ("status written before", 1, true, progressing.clone(), false),
        ("no tenant named", 0, false, TenantView::Unnamed, false),
        (
            "a failed Tenant",
            0,
            false,
            tenant(Some(TenantPhase::Failed), true),
            false,
        ),
    ];
    for (name, age, written, view, quiet) in rows {
        let plan = decide(
            &fresh(age, written),
            &with_tenant(Some(view.clone())),
            at(0),
            &settings(),
        );
        assert_eq!(plan.status.is_none(), quiet, "{name}: {:?}", plan.status);
        assert_eq!(plan.finalizer == FinalizerChange::Keep, quiet, "{name}");
        assert!(!launches(&plan), "{name}");
        if quiet {
            assert!(plan.events.is_empty(), "{name}: {:?}", plan.events);
            let left = TENANT_QUIET_PERIOD - Duration::from_secs(age.unsigned_abs());
            assert!(
                plan.requeue_after.is_some_and(|d| d <= left),
                "{name}: {:?}",
                plan.requeue_after
            );
            // The Tenant is still created or adopted.
            let change = match &view {
                TenantView::Missing { .. } => Some(TenantChange::Create {
                    name: TENANT.into(),
                    tenant_name: "acme".into(),
                }),
                _ => Some(TenantChange::Own {
                    name: TENANT.into(),
                }),
            };
            assert_eq!(plan.tenant, change, "{name}");
        }
    }
    // Once the Tenant is Ready, one pass adds the finalizer with the first intent and launches.
    let plan = decide(
        &fresh(1, false),
        &with_tenant(ready_tenant()),
        at(0),
        &settings(),
    );
    assert_eq!(plan.finalizer, FinalizerChange::Add);
    assert!(launches(&plan));
    assert!(plan.first_intent.is_some(), "{plan:?}");
}

#[test]
fn a_missing_tenant_warns_once_and_the_annotation_lets_the_ci_proceed() {
    let plan = decide(
        &ci(),
        &with_tenant(Some(TenantView::Unnamed)),
        at(0),
        &settings(),
    );
    let message = condition(&plan, CONDITION_ACCEPTED).unwrap().2;
    assert!(message.contains(TENANT_ANNOTATION), "{message}");
    let c = after(ci(), &plan);
    let again = decide(
        &c,
        &with_tenant(Some(TenantView::Unnamed)),
        at(5),
        &settings(),
    );
    assert!(again.events.is_empty(), "one Warning, not one per pass");
    assert_eq!(again.status, None, "nothing changed, nothing written");
    // The annotation is set and the Tenant becomes Ready.
    let plan = decide(&c, &with_tenant(ready_tenant()), at(10), &settings());
    assert!(launches(&plan));
    assert_eq!(condition(&plan, CONDITION_ACCEPTED).unwrap().0, "True");
}

#[test]
fn the_tenant_reference_is_recorded_once() {
    let plan = decide(&ci(), &with_tenant(ready_tenant()), at(0), &settings());
    let want = TenantReference {
        name: TENANT.into(),
        namespace: "ns".into(),
    };
    assert_eq!(
        plan.status.as_ref().unwrap().tenant_reference,
        Some(want.clone())
    );
    // An existing reference is kept as it is.
    let mut c = ci();
    let kept = TenantReference {
        name: "tenant-kept".into(),
        namespace: "ns".into(),
    };
    c.status = Some(ComputeInstanceStatus {
        tenant_reference: Some(kept.clone()),
        ..Default::default()
    });
    let plan = decide(&c, &with_tenant(ready_tenant()), at(0), &settings());
    assert_eq!(plan.status.as_ref().unwrap().tenant_reference, Some(kept));
}

#[test]
fn manual_cis_get_a_tenant_but_no_job_and_deletion_needs_none() {
    let mut c = ci();
    c.metadata.annotations = Some(BTreeMap::from([(
        MANAGEMENT_STATE_ANNOTATION.to_string(),
        "manual".to_string(),
    )]));
    let missing = TenantView::Missing {
        name: TENANT.into(),
        tenant_name: "acme".into(),
    };
    let plan = decide(&c, &with_tenant(Some(missing)), at(0), &settings());
    assert!(matches!(plan.tenant, Some(TenantChange::Create { .. })));
    assert!(!launches(&plan));

    // A deleting CI without a tenant is deprovisioned all the same.
    let mut d = ci();
    d.metadata.deletion_timestamp = Some(Time(at(0)));
    d.metadata.finalizers = Some(vec![FINALIZER.into(), AAP_FINALIZER.into()]);
    let plan = decide(
        &d,
        &with_tenant(Some(TenantView::Unnamed)),
        at(0),
        &settings(),
    );
    assert!(matches!(
        plan.call,
        Some(ProviderCall::Launch {
            job_type: JobType::Deprovision,
            ..
        })
    ));
    assert_eq!(plan.tenant, None);
    assert_eq!(condition(&plan, CONDITION_DELETING).unwrap().0, "True");
}

#[test]
fn progressing_follows_the_work_and_deleting_the_deletion() {
    // A new CI: a provision starts, Progressing=True with the Go operator's message.
    let plan = decide(&ci(), &with_tenant(ready_tenant()), at(0), &settings());
    let p = condition(&plan, CONDITION_PROGRESSING).unwrap();
    assert_eq!(
        (p.0.as_str(), p.2.as_str()),
        ("True", "Applying configuration")
    );
    assert_eq!(condition(&plan, CONDITION_DELETING), None);

    // The job succeeds and the automation reports the version: Progressing=False, Running.
    let mut c = after(ci(), &plan);
    let st = c.status.as_mut().unwrap();
    st.jobs[0].job_id = "7".into();
    st.jobs[0].state = JobState::Running;
    let desired = st.desired_config_version.clone().unwrap();
    c.metadata.annotations = Some(BTreeMap::from([(
        RECONCILED_CONFIG_VERSION_ANNOTATION.to_string(),
        desired,
    )]));
    let mut o = with_tenant(ready_tenant());
    o.jobs
        .insert("7".into(), JobObservation::new(JobState::Succeeded));
    let plan = decide(&c, &o, at(60), &settings());
    assert_eq!(condition(&plan, CONDITION_PROGRESSING).unwrap().0, "False");
    assert_eq!(plan.status.as_ref().unwrap().phase, Some(Phase::Running));
}

fn vm(ready: bool) -> VmView {
    VmView::Listed(vec![VmObservation {
        namespace: TENANT_NS.into(),
        name: "vm-1".into(),
        ready,
    }])
}

#[test]
fn availability_comes_from_the_vm_in_the_tenant_namespace() {
    let rows = [
        ("not tracked", None, None),
        (
            "no KubeVirt",
            Some(VmView::Unavailable),
            Some(("False", "KubeVirtUnavailable")),
        ),
        (
            "not ready",
            Some(vm(false)),
            Some(("False", "VirtualMachineNotReady")),
        ),
        ("ready", Some(vm(true)), Some(("True", "AsExpected"))),
    ];
    for (name, vms, want) in rows {
        let o = Observed {
            vms,
            ..with_tenant(ready_tenant())
        };
        let plan = decide(&ci(), &o, at(0), &settings());
        let got = condition(&plan, CONDITION_AVAILABLE);
        assert_eq!(
            got.as_ref().map(|c| (c.0.as_str(), c.1.as_str())),
            want,
            "{name}"
        );
        let reference = plan
            .status
            .as_ref()
            .and_then(|s| s.virtual_machine_reference.clone());
        assert_eq!(reference.is_some(), name.contains("ready"), "{name}");
        // VM observations never start or stop jobs.
        assert!(launches(&plan), "{name}");
    }
}

fn running_ci_with_vm(restart_requested: Option<i64>) -> ComputeInstance {
    let mut c = ci();
    c.spec.restart_requested_at = restart_requested.map(|s| Time(at(s)));
    c.status = Some(ComputeInstanceStatus {
        tenant_reference: Some(TenantReference {
            name: TENANT.into(),
            namespace: "ns".into(),
        }),
        virtual_machine_reference: Some(VirtualMachineReference {
            namespace: TENANT_NS.into(),
            kube_virt_virtual_machine_name: "vm-1".into(),
        }),
        ..Default::default()
    });
    c
}

#[test]
fn a_restart_request_deletes_the_vmi_and_starts_no_job() {
    let mut c = running_ci_with_vm(Some(50));
    // Already provisioned: a running provision job stands in for "no launch due".
    let plan0 = decide(&c, &with_tenant(ready_tenant()), at(0), &settings());
    c = after(c, &plan0);
    let jobs = c.status.as_ref().unwrap().jobs.len();
    let o = Observed {
        vms: Some(vm(true)),
        vmi: VmiState::Present {
            created: at(10),
            uid: "vmi-1".into(),
        },
        ..with_tenant(ready_tenant())
    };
    let plan = decide(&c, &o, at(100), &settings());
    let delete = plan.restart.clone().expect("a VMI deletion");
    assert_eq!(
        (
            delete.namespace.as_str(),
            delete.name.as_str(),
            delete.uid.as_str()
        ),
        (TENANT_NS, "vm-1", "vmi-1")
    );
    assert_eq!(
        plan.status.as_ref().unwrap().jobs.len(),
        jobs,
        "no job for a restart"
    );
    let ip = condition(&plan, CONDITION_RESTART_IN_PROGRESS).unwrap();
    assert_eq!(ip.0, "True");
    assert!(ip.2.starts_with("Restart initiated at "), "{}", ip.2);
    assert!(
        plan.requeue_after
            .is_some_and(|d| d <= Duration::from_secs(2))
    );

    // The new VMI appears: the restart is done.
    let c = after(c, &plan);
    let o = Observed {
        vms: Some(vm(true)),
        vmi: VmiState::Present {
            created: at(101),
            uid: "vmi-2".into(),
        },
        ..with_tenant(ready_tenant())
    };
    let plan = decide(&c, &o, at(102), &settings());
    let st = plan.status.as_ref().unwrap();
    assert_eq!(st.last_restarted_at, Some(Time(at(50))));
    assert_eq!(condition(&plan, CONDITION_RESTART_IN_PROGRESS), None);
    assert_eq!(plan.restart, None);
}

#[test]
fn a_failed_vmi_deletion_is_reported_and_retried() {
    let c = running_ci_with_vm(Some(50));
    let o = Observed {
        vms: Some(vm(true)),
        vmi: VmiState::Present {
            created: at(10),
            uid: "vmi-1".into(),
        },
        restart_error: Some("forbidden".into()),
        ..with_tenant(ready_tenant())
    };
    let plan = decide(&c, &o, at(100), &settings());
    assert!(plan.restart.is_some(), "tried again");
    let failed = condition(&plan, CONDITION_RESTART_FAILED).unwrap();
    assert_eq!(
        (failed.0.as_str(), failed.1.as_str()),
        ("True", "VMIDeletionFailed")
    );
    assert!(failed.2.contains("forbidden"));
}

#[test]
fn every_reason_fits_the_go_condition_schema() {
    let views = [
        TenantView::Unnamed,
        TenantView::Missing {
            name: TENANT.into(),
            tenant_name: "acme".into(),
        },
        tenant(Some(TenantPhase::Failed), true),
        tenant(Some(TenantPhase::Ready), true),
    ];
    for view in views {
        let o = Observed {
            vms: Some(vm(false)),
            ..with_tenant(Some(view))
        };
        let plan = decide(&running_ci_with_vm(Some(50)), &o, at(100), &settings());
        for c in &plan.status.as_ref().unwrap().conditions {
            assert!(
                cloudkit_api::conditions::is_valid_reason(&c.reason),
                "{}: {}",
                c.type_,
                c.reason
            );
            assert!(!c.message.is_empty(), "{}", c.type_);
        }
    }
}
