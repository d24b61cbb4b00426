//! The cloudkit-operator binary: configuration, wiring, endpoints and signals. The behaviour
//! lives in the library crates.

mod config;
mod http;
mod leader;
mod shard;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use cloudkit_aap::AapProvider;
use cloudkit_api::{ComputeInstance, Tenant};
use cloudkit_eda::EdaProvider;
use cloudkit_feedback::{FeedbackContext, FeedbackMetrics, FulfillmentClient};
use cloudkit_provider::{Provider, ProviderRegistry};
use cloudkit_reconciler::Platform;
use cloudkit_reconciler::tenant::{TenantContext, run_tenants};
use cloudkit_reconciler::{Context, Metrics, Settings};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::{Cli, Command, LogFormat, RunArgs, RunConfig, WatchScope};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match config::setting_error(&e) {
            Some(_) if config::asks_for_crd(std::env::args_os()) => return print_crd(),
            Some(setting) => {
                eprintln!("error: {setting}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    match cli.command {
        Some(Command::Crd) => print_crd(),
        Some(Command::Run) | None => {
            init_logging(cli.run.log_format);
            let config = match cli.run.validate() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cli.run, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The CRDs as one multi-document YAML: `crds/computeinstance.yaml`, then `crds/tenant.yaml`.
fn print_crd() -> ExitCode {
    match cloudkit_api::crd_yaml().and_then(|ci| Ok((ci, cloudkit_api::tenant_crd_yaml()?))) {
        Ok((ci, tenant)) => {
            print!("{ci}---\n{tenant}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot render the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("KUBECONFIG: cannot read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no cluster configuration (in-cluster or KUBECONFIG): {e}")
        })?,
    };
    Ok(Client::try_from(config)?)
}

fn registry(config: &RunConfig) -> anyhow::Result<ProviderRegistry> {
    let aap = config
        .aap
        .as_ref()
        .map(|c| AapProvider::new(c).map(|p| Arc::new(p) as Arc<dyn Provider>))
        .transpose()?;
    let eda = config
        .eda
        .clone()
        .map(|c| EdaProvider::new(c).map(|p| Arc::new(p) as Arc<dyn Provider>))
        .transpose()?;
    let (active, reader) = match config.active {
        cloudkit_api::ProviderKind::Aap => (aap, eda),
        cloudkit_api::ProviderKind::Eda => (eda, aap),
    };
    let active = active.ok_or_else(|| anyhow::anyhow!("the active provider is not configured"))?;
    let mut registry = ProviderRegistry::new(active);
    if let Some(reader) = reader {
        registry = registry.with_reader(reader);
    }
    Ok(registry)
}

async fn run(args: RunArgs, config: RunConfig) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut metrics = Metrics::new();
    let feedback_metrics = FeedbackMetrics::new();
    if config.feedback.is_some() {
        feedback_metrics.register(metrics.registry_mut());
    }
    let shard_metrics = shard::metrics(config.shard.as_ref(), &mut metrics);
    let metrics = Arc::new(metrics);
    let ready = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    if let Some(address) = config.http_address {
        let app = http::probes(Arc::clone(&ready)).merge(http::open_metrics(Arc::clone(&metrics)));
        let (address, server) =
            http::serve(config::ENV_HTTP_ADDRESS, address, app, stop_rx.clone()).await?;
        info!(%address, "serving /healthz, /readyz and /metrics");
        servers.push(server);
    }
    if let Some(address) = config.probe_address {
        let app = http::probes(Arc::clone(&ready));
        let (address, server) = http::serve(
            config::ENV_HEALTH_PROBE_BIND_ADDRESS,
            address,
            app,
            stop_rx.clone(),
        )
        .await?;
        info!(%address, "serving /healthz and /readyz");
        servers.push(server);
    }

    let client = client(&args).await?;
    if let Some(serving) = &config.metrics {
        let setting = config::ENV_METRICS_BIND_ADDRESS;
        let server = if serving.secure {
            let (address, server) = http::serve_secure_metrics(
                setting,
                serving.address,
                Arc::clone(&metrics),
                client.clone(),
                serving.cert.as_ref(),
                stop_rx.clone(),
            )
            .await?;
            info!(%address, "serving /metrics over HTTPS to authorized callers");
            server
        } else {
            let app = http::open_metrics(Arc::clone(&metrics));
            let (address, server) =
                http::serve(setting, serving.address, app, stop_rx.clone()).await?;
            info!(%address, "serving /metrics");
            server
        };
        servers.push(server);
    }
    let registry = registry(&config)?;
    let settings = Settings {
        history_limit: config.history_limit,
        retry_limit: config.retry_limit,
        poll_interval: config.poll_interval,
        eda_grace: config.eda_grace,
        launch_window: config.launch_window,
        restart_timeout: config.restart_timeout,
        active: config.active,
        providers: Default::default(),
    };
    let platform_scope = match &config.scope {
        WatchScope::Namespace(ns) => Some(ns.clone()),
        WatchScope::All => None,
    };
    let ctx = Arc::new(shard::select_cis(
        Context::new(client.clone(), registry, settings, Arc::clone(&metrics))
            .with_platform(Platform::new(client.clone(), platform_scope)),
        config.shard.as_ref(),
    ));
    let tenant_ctx = Arc::new(shard::select_tenants(
        TenantContext::new(client.clone(), config.tenant_network),
        config.shard.as_ref(),
    ));
    let feedback = match &config.feedback {
        Some(settings) => {
            let fulfillment = FulfillmentClient::new(settings)
                .map_err(|e| anyhow::anyhow!("fulfillment service: {e}"))?;
            info!(address = %settings.address, "reporting CI state to the fulfillment service");
            Some(Arc::new(shard::select_feedback(
                FeedbackContext::new(client.clone(), fulfillment, feedback_metrics),
                config.shard.as_ref(),
            )))
        }
        None => None,
    };
    // ComputeInstances and Tenants are watched in the same scope (SPEC 12).
    let (api, tenants): (Api<ComputeInstance>, Api<Tenant>) = match &config.scope {
        WatchScope::Namespace(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        WatchScope::All => (Api::all(client.clone()), Api::all(client.clone())),
    };
    info!(
        provider = %config.active,
        namespace = %config.scope,
        tenant_network = ?config.tenant_network,
        shard = ?config.shard.as_ref().map(|s| (&s.name, s.selector.to_string())),
        "starting controller"
    );

    let leadership = match &config.leader_election {
        Some(lease) => {
            let candidate = leader::Candidate::join(client.clone(), lease).await?;
            // A standby is ready: it serves its probes while it waits for the Lease.
            ready.store(true, Ordering::Relaxed);
            match candidate.lead(stop_rx.clone()).await? {
                Some(leadership) => Some(leadership),
                None => {
                    for server in servers {
                        let _ = server.await;
                    }
                    return Ok(());
                }
            }
        }
        None => None,
    };

    ready.store(true, Ordering::Relaxed);
    // Every controller stops on SIGTERM or when the Lease is lost, and finish in-flight passes.
    let (halt_tx, halt_rx) = watch::channel(false);
    let stop = stopped(stop_rx.clone());
    let lost = leadership.as_ref().map(leader::Leadership::lost);
    tokio::spawn(async move {
        match lost {
            Some(lost) => {
                tokio::select! {
                    _ = stop => {}
                    _ = lost => {}
                }
            }
            None => stop.await,
        }
        let _ = halt_tx.send(true);
    });
    let feedback_run = {
        let api = api.clone();
        let halted = stopped(halt_rx.clone());
        async move {
            if let Some(feedback) = feedback {
                cloudkit_feedback::controller::run(feedback, api, halted).await;
            }
        }
    };
    tokio::join!(
        cloudkit_reconciler::run(ctx, api, config.concurrency, stopped(halt_rx.clone())),
        run_tenants(tenant_ctx, tenants, stopped(halt_rx.clone())),
        feedback_run,
        shard::watch(&client, &config, shard_metrics, stopped(halt_rx)),
    );
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    for server in servers {
        let _ = server.await;
    }
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
