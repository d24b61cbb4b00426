//! Where the server and client binaries are.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Kubernetes version built by `hack/testenv-install.sh`.
pub const KUBERNETES_VERSION: &str = "1.20.2";

/// The programs an environment runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-controller-manager`, for garbage collection by owner references and namespace
    /// deletion.
    pub kube_controller_manager: PathBuf,
}

impl Binaries {
    /// Finds `kube-apiserver` (`$CLOUDKIT_KUBE_APISERVER`, else
    /// `~/.cache/cloudkit/kube-apiserver-1.20.2`), `kube-controller-manager`
    /// (`$CLOUDKIT_KUBE_CONTROLLER_MANAGER`, else
    /// `~/.cache/cloudkit/kube-controller-manager-1.20.2`) and `etcd` (`$CLOUDKIT_ETCD`, else
    /// `etcd` on `PATH`, else `/usr/bin/etcd`). The error says how to install what is missing.
    pub fn locate() -> Result<Binaries> {
        let kube_apiserver = built("kube-apiserver", "CLOUDKIT_KUBE_APISERVER")?;
        let kube_controller_manager = built(
            "kube-controller-manager",
            "CLOUDKIT_KUBE_CONTROLLER_MANAGER",
        )?;
        let etcd = match std::env::var_os("CLOUDKIT_ETCD") {
            Some(p) => executable("etcd", PathBuf::from(p), "$CLOUDKIT_ETCD")?,
            None => match find_on_path("etcd") {
                Some(p) => p,
                None => executable("etcd", PathBuf::from("/usr/bin/etcd"), "PATH or /usr/bin")?,
            },
        };
        Ok(Binaries {
            kube_apiserver,
            etcd,
            kube_controller_manager,
        })
    }
}

/// A program built by `hack/testenv-install.sh`: `$<var>`, else `<cache>/<what>-1.20.2`.
fn built(what: &'static str, var: &str) -> Result<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => executable(what, PathBuf::from(p), &format!("${var}")),
        None => executable(
            what,
            cache_dir().join(format!("{what}-{KUBERNETES_VERSION}")),
            "the build cache",
        ),
    }
}

/// Debian's `kubectl` 1.20, matching the server: `$CLOUDKIT_KUBECTL`, else
/// `~/.cache/cloudkit/kubectl-1.20.2` (put there by `hack/testenv-install.sh`). A newer kubectl
/// from `PATH` is deliberately not used: its client-side validation and discovery differ.
pub fn kubectl_path() -> Result<PathBuf> {
    match std::env::var_os("CLOUDKIT_KUBECTL") {
        Some(p) => executable("kubectl", PathBuf::from(p), "$CLOUDKIT_KUBECTL"),
        None => executable(
            "kubectl",
            cache_dir().join(format!("kubectl-{KUBERNETES_VERSION}")),
            "the build cache",
        ),
    }
}

/// `$CLOUDKIT_CACHE_DIR`, else `~/.cache/cloudkit` (the same rule as the install script).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLOUDKIT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("cloudkit")
}

fn executable(what: &'static str, path: PathBuf, source: &str) -> Result<PathBuf> {
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            what,
            detail: format!("no executable at {} (from {source})", path.display()),
        })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
