//! Client overhead per request: polls one job on the in-process AWX simulator through the AAP
//! provider (request building, Bearer header, capped body read, typed parsing, status mapping)
//! and through a bare reqwest GET of the same URL, in the same run, and prints both and their
//! ratio. Run with `cargo run --release -p cloudkit-bench --example overhead [-- N]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cloudkit_aap::{AapConfig, AapProvider};
use cloudkit_aap_sim::{Simulator, TemplateSpec};
use cloudkit_api::{
    AapJobKind, ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType,
};
use cloudkit_provider::{Launch, Provider, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let sim = Simulator::builder()
        .token("bench")
        .fast()
        .template(TemplateSpec::job("provision_vm"))
        .template(TemplateSpec::job("deprovision_vm"))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = AapConfig::new(
        &sim.api_url(),
        Secret::new("bench"),
        "provision_vm",
        "deprovision_vm",
    )
    .unwrap();
    let provider = AapProvider::new(&config).unwrap();
    let ci = ComputeInstance::new("vm", ComputeInstanceSpec::for_template("t"));
    let started = provider
        .provision(&ci, &Launch::new(JobType::Provision, "bench/1"))
        .await
        .unwrap();
    let mut job = JobStatus::new(
        started.job_id.clone(),
        JobType::Provision,
        Time(k8s_openapi::jiff::Timestamp::now()),
        JobState::Pending,
    );
    job.aap_job_kind = Some(AapJobKind::Job);
    let url = format!("{}/v2/jobs/{}/", sim.api_url(), started.job_id);
    let raw = reqwest::Client::new();

    // Warm both connection pools, then alternate rounds so machine noise hits both alike.
    for _ in 0..200 {
        provider.job_state(&ci, &job).await.unwrap();
        raw.get(&url)
            .bearer_auth("bench")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let (mut client_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
    let rounds = 10;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n / rounds {
            provider.job_state(&ci, &job).await.unwrap();
        }
        client_time += t.elapsed();
        let t = Instant::now();
        for _ in 0..n / rounds {
            raw.get(&url)
                .bearer_auth("bench")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        raw_time += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("requests per side: {n}");
    println!("AAP provider job_state: {:.1} us/request", per(client_time));
    println!("bare reqwest GET:       {:.1} us/request", per(raw_time));
    println!(
        "overhead: {:.1} us/request ({:.2}x the bare request)",
        per(client_time) - per(raw_time),
        per(client_time) / per(raw_time)
    );
    sim.shutdown().await;
}
