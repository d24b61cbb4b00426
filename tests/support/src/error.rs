//! Errors of the harness's fallible parts (the launcher), for callers that report rather than
//! panic (the benchmark and chaos binaries).

/// Why a child process could not be started or asked something.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The process exited, or did not reach a state, in time. `log` is the tail of its log.
    #[error("{what}\n{log}")]
    Start {
        /// What did not happen.
        what: String,
        /// The last lines of the process's log.
        log: String,
    },

    /// An HTTP request to the process failed.
    #[error("{context}: {source}")]
    Http {
        /// Which request.
        context: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The test API server could not be used.
    #[error(transparent)]
    TestEnv(#[from] cloudkit_testenv::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
