//! `kubectl cloudkit`: a kubectl plugin for ComputeInstances. Installed on the `PATH` as
//! `kubectl-cloudkit`, kubectl runs it for `kubectl cloudkit ...`.
//!
//! - `jobs NAME`: the job history (`status.jobs[]`) as a table;
//! - `status NAME`: phase, tenant and VM references, conditions;
//! - `retry NAME`: a new value of the retry annotation, so that the operator runs the latest
//!   failed provision or deprovision again;
//! - `restart NAME`: `spec.restartRequestedAt` set to now, in whole seconds;
//! - `release NAME --yes-i-know`: the escape hatch for a deletion that does not finish
//!   (management state `manual`; with `--remove-aap-finalizer` also the automation's finalizer).
//!
//! It uses the user's kubeconfig like kubectl (`KUBECONFIG`, `--kubeconfig`, `--context`, the
//! context's namespace unless `-n` is given). Every error is one line on stderr naming the CI and
//! the cause, with exit status 1.

mod actions;
mod format;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cloudkit_api::ComputeInstance;
use cloudkit_api::metadata::{AAP_FINALIZER, MANAGEMENT_STATE_ANNOTATION, RETRY_ANNOTATION};
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Manage cloudkit ComputeInstances: job history, conditions, retry, restart, release.
#[derive(Debug, Parser)]
#[command(name = "kubectl-cloudkit", bin_name = "kubectl cloudkit", version)]
struct Cli {
    /// Namespace of the ComputeInstance [default: the kubeconfig context's namespace].
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Path to the kubeconfig file [default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account].
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: the current context].
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The job history (status.jobs[]) as a table, oldest first.
    Jobs {
        /// Name of the ComputeInstance.
        name: String,
        /// Show messages in full instead of cutting them at 60 characters.
        #[arg(long)]
        wide: bool,
    },
    /// Phase, tenant and VM references, and the conditions as a table.
    Status {
        /// Name of the ComputeInstance.
        name: String,
        /// Show messages in full instead of cutting them at 60 characters.
        #[arg(long)]
        wide: bool,
    },
    /// Run the latest failed provision or deprovision again (a new value of the retry
    /// annotation).
    Retry {
        /// Name of the ComputeInstance.
        name: String,
    },
    /// Restart the VM: set spec.restartRequestedAt to now (whole seconds).
    Restart {
        /// Name of the ComputeInstance.
        name: String,
    },
    /// Release a deletion that does not finish: management state `manual` makes the operator
    /// remove its finalizer without deprovisioning.
    Release {
        /// Name of the ComputeInstance.
        name: String,
        /// Confirm: the VM is not deprovisioned and may be left behind.
        #[arg(long)]
        yes_i_know: bool,
        /// Also remove the automation's finalizer (cloudkit.openshift.io/computeinstance-aap);
        /// only once the VM has been cleaned up by hand.
        #[arg(long)]
        remove_aap_finalizer: bool,
    },
}

impl Command {
    fn name(&self) -> &str {
        match self {
            Command::Jobs { name, .. }
            | Command::Status { name, .. }
            | Command::Retry { name }
            | Command::Restart { name }
            | Command::Release { name, .. } => name,
        }
    }
}

/// A failure, printed as `kubectl-cloudkit: computeinstance NS/NAME: CAUSE`.
#[derive(Debug)]
struct Failure {
    ci: String,
    cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kubectl-cloudkit: computeinstance {}: {}",
            self.ci, self.cause
        )
    }
}

/// The cause of a failed request, in a few words: `not found`, `forbidden: ...`,
/// `API server unreachable: ...`.
fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => match s.code {
            404 if s.message.contains("could not find the requested resource") => {
                "not found: the ComputeInstance resource (cloudkit.openshift.io) is not \
                 installed on this cluster"
                    .to_string()
            }
            404 => "not found".to_string(),
            403 => format!("forbidden: {}", s.message),
            401 => "unauthorized: the API server refused the kubeconfig's credentials".to_string(),
            409 => format!(
                "conflict, the object changed meanwhile, try again: {}",
                s.message
            ),
            code => format!("the API server answered {code} {}: {}", s.reason, s.message),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => {
            // The causes say more than the kind of error kube wraps them in.
            let cause = std::error::Error::source(err).unwrap_or(err);
            format!("API server unreachable: {}", error_chain(cause))
        }
        kube::Error::Auth(_) => format!("credentials: {}", error_chain(err)),
        _ => error_chain(err),
    }
}

/// An error and its sources on one line, each distinct message once.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    format::one_line(Some(&parts.join(": ")), None)
}

/// The client configuration, as kubectl would find it.
async fn load_config(cli: &Cli) -> Result<Config, String> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&cli.kubeconfig, &cli.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {}", path.display(), error_chain(&e)))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {}", path.display(), error_chain(&e)))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {}", error_chain(&e)))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| format!("kubeconfig: {}", error_chain(&e)))?,
    };
    // Every request of a command line tool ends in bounded time.
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    config.write_timeout = Some(Duration::from_secs(30));
    Ok(config)
}

async fn run(cli: Cli) -> Result<String, Failure> {
    let name = cli.command.name().to_string();
    if let Command::Release {
        yes_i_know: false,
        remove_aap_finalizer,
        ..
    } = &cli.command
    {
        let ci = match &cli.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        return Err(Failure {
            cause: actions::release_refusal(*remove_aap_finalizer),
            ci,
        });
    }
    let config = load_config(&cli).await.map_err(|cause| Failure {
        ci: name.clone(),
        cause,
    })?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let ci_name = format!("{namespace}/{name}");
    let fail = |cause: String| Failure {
        ci: ci_name.clone(),
        cause,
    };
    let client = Client::try_from(config).map_err(|e| fail(describe_kube_error(&e)))?;
    let api: Api<ComputeInstance> = Api::namespaced(client, &namespace);
    let get = || async {
        api.get(&name)
            .await
            .map_err(|e| fail(describe_kube_error(&e)))
    };
    let merge = |patch: serde_json::Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| describe_kube_error(&e))
        }
    };
    let now = Timestamp::now();
    let width = |wide: bool| (!wide).then_some(format::MESSAGE_WIDTH);
    match &cli.command {
        Command::Jobs { wide, .. } => {
            let ci = get().await?;
            let jobs = ci.status.map(|s| s.jobs).unwrap_or_default();
            if jobs.is_empty() {
                return Ok(format!("{ci_name}: no jobs recorded\n"));
            }
            Ok(format::jobs_table(&jobs, now, width(*wide)))
        }
        Command::Status { wide, .. } => {
            let ci = get().await?;
            Ok(format::status_report(&ci, now, width(*wide)))
        }
        Command::Retry { .. } => {
            let ci = get().await?;
            let current = ci
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RETRY_ANNOTATION));
            let token = actions::retry_token(now, current.map(String::as_str));
            merge(actions::retry_patch(&token)).await.map_err(fail)?;
            Ok(format!(
                "{ci_name}: {RETRY_ANNOTATION}={token}; the operator runs the latest failed \
                 provision or deprovision again\n"
            ))
        }
        Command::Restart { .. } => {
            let at = actions::restart_time(now);
            merge(actions::restart_patch(&at)).await.map_err(fail)?;
            Ok(format!("{ci_name}: restart requested at {at}\n"))
        }
        Command::Release {
            remove_aap_finalizer,
            ..
        } => {
            let ci = get().await?;
            actions::release_precondition(&ci).map_err(fail)?;
            let ci = merge(actions::release_patch()).await.map_err(fail)?;
            let mut out = format!(
                "{ci_name}: {MANAGEMENT_STATE_ANNOTATION}=manual; the operator removes its \
                 finalizer without deprovisioning\n"
            );
            let finalizers = ci.metadata.finalizers.clone().unwrap_or_default();
            let rv = ci.metadata.resource_version.clone().unwrap_or_default();
            match actions::remove_aap_finalizer_patch(&finalizers, &rv) {
                Some(patch) if *remove_aap_finalizer => {
                    merge(patch).await.map_err(|cause| {
                        fail(format!("removing finalizer {AAP_FINALIZER}: {cause}"))
                    })?;
                    out.push_str(&format!("{ci_name}: finalizer {AAP_FINALIZER} removed\n"));
                }
                Some(_) => out.push_str(&format!(
                    "{ci_name}: the automation's finalizer {AAP_FINALIZER} stays until the VM is \
                     cleaned up; once it is, run: kubectl cloudkit release -n {namespace} {name} \
                     --yes-i-know --remove-aap-finalizer\n"
                )),
                None => {}
            }
            Ok(out)
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn causes_are_said_in_a_few_words() {
        let rows = [
            (
                api_error(404, "NotFound", "computeinstances \"vm\" not found"),
                "not found",
            ),
            (
                api_error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
                "not found: the ComputeInstance resource (cloudkit.openshift.io) is not installed on this cluster",
            ),
            (
                api_error(403, "Forbidden", "user \"u\" cannot get resource"),
                "forbidden: user \"u\" cannot get resource",
            ),
            (
                api_error(401, "Unauthorized", "Unauthorized"),
                "unauthorized: the API server refused the kubeconfig's credentials",
            ),
            (
                api_error(422, "Invalid", "spec.x: bad"),
                "the API server answered 422 Invalid: spec.x: bad",
            ),
        ];
        for (err, want) in rows {
            assert_eq!(describe_kube_error(&err), want);
        }
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        let text = describe_kube_error(&refused);
        assert!(text.starts_with("API server unreachable: "), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
        assert!(
            !text.contains("ServiceError"),
            "the causes, not the wrapper: {text}"
        );
    }

    #[test]
    fn failures_name_the_ci() {
        let f = Failure {
            ci: "ns/vm".into(),
            cause: "not found".into(),
        };
        assert_eq!(
            f.to_string(),
            "kubectl-cloudkit: computeinstance ns/vm: not found"
        );
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kubectl-cloudkit",
            "release",
            "vm",
            "-n",
            "ns",
            "--yes-i-know",
        ]);
        assert!(
            matches!(
                cli.as_ref().map(|c| (&c.command, c.namespace.as_deref())),
                Ok((
                    Command::Release {
                        yes_i_know: true,
                        remove_aap_finalizer: false,
                        ..
                    },
                    Some("ns")
                ))
            ),
            "{cli:?}"
        );
    }
}
