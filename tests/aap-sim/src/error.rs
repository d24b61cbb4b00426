//! Errors of the simulator library.

/// What can go wrong building or running a simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message says which setting and why.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// Binding or serving the listening socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig for playbook mode could not be loaded or used.
    #[error("playbook mode: {0}")]
    Kube(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with the simulator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
