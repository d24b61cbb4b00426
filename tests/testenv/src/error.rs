//! Errors of the test environment.

use std::path::PathBuf;

/// What the install script is called; every "missing binary" error points at it.
pub(crate) const INSTALL_HINT: &str = "run hack/testenv-install.sh (or ./x test, which runs it) to install etcd and build kube-apiserver and kube-controller-manager";

/// Why the test environment could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the environment needs is not installed.
    #[error("{what} not found: {detail}; {INSTALL_HINT}")]
    MissingBinary {
        /// Which program (`kube-apiserver`, `kube-controller-manager`, `etcd`, `kubectl`).
        what: &'static str,
        /// Where it was looked for.
        detail: String,
    },

    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Generating the CA, the serving certificate or the service-account key failed.
    #[error("generating certificates: {0}")]
    Certificates(#[from] rcgen::Error),

    /// etcd or kube-apiserver exited or did not become ready in time. `logs` holds the tail of
    /// both servers' logs.
    #[error(
        "{what} did not start: {reason}\n{logs}\n(set CLOUDKIT_TESTENV_KEEP=1 to keep the environment directory)"
    )]
    Startup {
        /// Which server.
        what: &'static str,
        /// Exit status or deadline.
        reason: String,
        /// Tails of the server logs.
        logs: String,
    },

    /// A request to the test API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The generated kubeconfig could not be turned into a client configuration.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// A CRD file could not be read, parsed or installed.
    #[error("CRD {}: {message}", path.display())]
    Crd {
        /// The YAML file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The environment shared by the tests of this binary failed to start; every test that asks
    /// for it gets the same message.
    #[error("the shared test environment failed to start: {0}")]
    Shared(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
