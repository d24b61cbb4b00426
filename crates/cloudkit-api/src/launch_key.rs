//! The launch key: the identity of one job the operator means to start.
//!
//! Every intent recorded in `status.jobs[]` carries one (`launchKey`), and the AAP provider sends
//! it with the launch (the extra var `cloudkit_launch_key`) so that a launch whose answer was
//! lost can be found again instead of repeated. Its text is
//! `<scope>/<type>/<config version or "delete">/<attempt>`: a provision for a configuration
//! version and attempt, or a deprovision for a deletion attempt, always has the same key.
//!
//! ```
//! use cloudkit_api::{JobType, LaunchKey};
//!
//! let key = LaunchKey::provision("u-1", "c15fb6a31521d9c3", 2);
//! assert_eq!(key.to_string(), "u-1/provision/c15fb6a31521d9c3/2");
//! assert_eq!("u-1/provision/c15fb6a31521d9c3/2".parse(), Ok(key));
//!
//! let key: LaunchKey = "ns/vm-1/deprovision/delete/1".parse()?;
//! assert_eq!((key.scope.as_str(), key.job_type), ("ns/vm-1", JobType::Deprovision));
//! assert_eq!(key.config_version, None);
//! # Ok::<(), cloudkit_api::LaunchKeyError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{ComputeInstance, JobType};

/// What stands in a deprovision's key where a provision's names its configuration version.
const DELETE: &str = "delete";

/// The identity of one intended job: which CI, which type, for which configuration version (a
/// provision) or deletion (a deprovision), and which attempt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LaunchKey {
    /// The CI: its uid, or `<namespace>/<name>` for an object without one (see
    /// [`LaunchKey::scope_of`]).
    pub scope: String,
    /// Provision or deprovision.
    pub job_type: JobType,
    /// The configuration version a provision applies; `None` for a deprovision.
    pub config_version: Option<String>,
    /// Which attempt for that version or deletion, from 1.
    pub attempt: i32,
}

impl LaunchKey {
    /// The key of `attempt` at provisioning `config_version` on the CI identified by `scope`.
    pub fn provision(
        scope: impl Into<String>,
        config_version: impl Into<String>,
        attempt: i32,
    ) -> Self {
        LaunchKey {
            scope: scope.into(),
            job_type: JobType::Provision,
            config_version: Some(config_version.into()),
            attempt,
        }
    }

    /// The key of `attempt` at deprovisioning the CI identified by `scope`.
    pub fn deprovision(scope: impl Into<String>, attempt: i32) -> Self {
        LaunchKey {
            scope: scope.into(),
            job_type: JobType::Deprovision,
            config_version: None,
            attempt,
        }
    }

    /// What identifies `ci` in its launch keys: its uid, or `<namespace>/<name>` for an object
    /// that has none yet (only ever in tests; the API server always assigns one).
    pub fn scope_of(ci: &ComputeInstance) -> String {
        match &ci.metadata.uid {
            Some(uid) => uid.clone(),
            None => format!(
                "{}/{}",
                ci.metadata.namespace.as_deref().unwrap_or_default(),
                ci.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }

    /// Whether this key names a provision of `ci` itself (not of an object whose metadata was
    /// copied onto it, as a backup restore does: that one has another uid).
    pub fn is_provision_of(&self, ci: &ComputeInstance) -> bool {
        self.job_type == JobType::Provision && self.scope == Self::scope_of(ci)
    }
}

impl fmt::Display for LaunchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self.config_version.as_deref().unwrap_or(DELETE);
        write!(
            f,
            "{}/{}/{}/{}",
            self.scope, self.job_type, target, self.attempt
        )
    }
}

/// A text that is not a launch key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "launch key {0:?} is not <scope>/<provision|deprovision>/<config version or delete>/<attempt>"
)]
pub struct LaunchKeyError(pub String);

impl FromStr for LaunchKey {
    type Err = LaunchKeyError;

    /// Parses from the right: the scope is whatever comes before the last three parts, so a
    /// `<namespace>/<name>` scope keeps its slash.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || LaunchKeyError(s.to_string());
        let mut parts = s.rsplitn(4, '/');
        let (Some(attempt), Some(target), Some(job_type), Some(scope)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let attempt: i32 = attempt.parse().map_err(|_| malformed())?;
        let job_type = JobType::ALL
            .into_iter()
            .find(|t| t.as_str() == job_type)
            .ok_or_else(malformed)?;
        let config_version = match job_type {
            JobType::Provision if target != DELETE => Some(target.to_string()),
            JobType::Deprovision if target == DELETE => None,
            _ => return Err(malformed()),
        };
        if scope.is_empty() || target.is_empty() || attempt < 1 {
            return Err(malformed());
        }
        Ok(LaunchKey {
            scope: scope.to_string(),
            job_type,
            config_version,
            attempt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ComputeInstanceSpec;

    #[test]
    fn keys_round_trip_through_their_text() {
        let keys = [
            LaunchKey::provision("uid-1", "c15fb6a31521d9c3", 1),
            LaunchKey::provision("uid-1", "c15fb6a31521d9c3", 12),
            LaunchKey::deprovision("uid-1", 3),
            LaunchKey::provision("ns/vm-1", "abc", 1),
            LaunchKey::deprovision("ns/vm-1", 1),
        ];
        for key in keys {
            let text = key.to_string();
            assert_eq!(text.parse::<LaunchKey>(), Ok(key), "{text}");
        }
    }

    #[test]
    fn the_text_is_the_wire_format() {
        assert_eq!(
            LaunchKey::provision("uid-1", "abc", 2).to_string(),
            "uid-1/provision/abc/2"
        );
        assert_eq!(
            LaunchKey::deprovision("uid-1", 1).to_string(),
            "uid-1/deprovision/delete/1"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        let rows = [
            "",
            "uid-1",
            "uid-1/provision/abc",
            "/provision/abc/1",
            "uid-1/abc/1",
            "uid-1/create/abc/1",
            "uid-1/provision//1",
            "uid-1/provision/abc/",
            "uid-1/provision/abc/x",
            "uid-1/provision/abc/0",
            "uid-1/provision/abc/-1",
            "uid-1/provision/delete/1",
            "uid-1/deprovision/abc/1",
        ];
        for text in rows {
            assert_eq!(
                text.parse::<LaunchKey>(),
                Err(LaunchKeyError(text.to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_scope_is_the_uid_or_else_namespace_and_name() {
        let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("t"));
        ci.metadata.namespace = Some("ns".into());
        assert_eq!(LaunchKey::scope_of(&ci), "ns/vm-1");
        ci.metadata.uid = Some("uid-1".into());
        assert_eq!(LaunchKey::scope_of(&ci), "uid-1");
        assert!(LaunchKey::provision("uid-1", "abc", 1).is_provision_of(&ci));
        assert!(!LaunchKey::provision("uid-2", "abc", 1).is_provision_of(&ci));
        assert!(!LaunchKey::deprovision("uid-1", 1).is_provision_of(&ci));
    }
}
