//! Tokens, roles and privileges, computed the way Proxmox's access control does.

use std::collections::{BTreeMap, BTreeSet};

use super::scenario::{AclSpec, TokenSpec};

/// Every privilege the simulator knows (the subset of Proxmox's that matters to template caching).
pub(crate) const ALL_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.Disk",
    "VM.Console",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Snapshot",
];

/// The privileges of a built-in role, or `None` for an unknown role name.
pub(crate) fn role_privs(role: &str) -> Option<Vec<&'static str>> {
    let filter = |keep: &dyn Fn(&str) -> bool| ALL_PRIVS.iter().copied().filter(|p| keep(p)).collect();
    Some(match role {
        "Administrator" => ALL_PRIVS.to_vec(),
        // Sys.Modify and Sys.AccessNetwork belong to the "root" group: PVEAdmin lacks them.
        "PVEAdmin" => {
            filter(&|p| !matches!(p, "Sys.Modify" | "Sys.AccessNetwork" | "Realm.Allocate" | "Permissions.Modify"))
        }
        "PVEAuditor" => filter(&|p| p.ends_with(".Audit")),
        "PVEDatastoreAdmin" => {
            vec!["Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit"]
        }
        "PVEDatastoreUser" => vec!["Datastore.AllocateSpace", "Datastore.Audit"],
        "PVESysAdmin" => {
            vec!["Sys.Audit", "Sys.Console", "Sys.Syslog", "Sys.PowerMgmt", "Sys.Incoming", "Sys.AccessNetwork"]
        }
        "NoAccess" => vec![],
        _ => return None,
    })
}

/// Privileges at one path: name → propagate flag.
pub(crate) type PrivMap = BTreeMap<String, bool>;

/// An API token with its resolved ACLs.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// `user@realm!name`.
    pub id: String,
    pub secret: String,
    privsep: bool,
    acl: Vec<AclSpec>,
    user_acl: Vec<AclSpec>,
}

impl Token {
    /// Builds a token from its scenario entry, generating a secret when none is given.
    pub(crate) fn from_spec(spec: &TokenSpec) -> Self {
        Self {
            id: spec.id.clone(),
            secret: spec.secret.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            privsep: spec.privsep,
            acl: spec.acl.clone(),
            user_acl: spec.user_acl.clone(),
        }
    }

    /// The owning user (`user@realm`).
    pub(crate) fn user(&self) -> &str {
        self.id.rsplit_once('!').map_or(self.id.as_str(), |(u, _)| u)
    }

    /// Effective privileges at `path`, with inheritance and privilege separation applied.
    pub(crate) fn privs_at(&self, path: &str) -> PrivMap {
        let user = privs_from_acl(&self.user_acl, path);
        if !self.privsep {
            return user;
        }
        privs_from_acl(&self.acl, path)
            .into_iter()
            .filter_map(|(p, prop)| user.get(&p).map(|uprop| (p, prop && *uprop)))
            .collect()
    }

    /// Whether the token holds `privilege` at `path`.
    pub(crate) fn has(&self, path: &str, privilege: &str) -> bool {
        self.privs_at(path).contains_key(privilege)
    }

    /// Paths `GET /access/permissions` lists without a `path` parameter.
    pub(crate) fn listed_paths(&self) -> BTreeSet<String> {
        let mut paths: BTreeSet<String> =
            ["/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let own = if self.privsep { &self.acl } else { &self.user_acl };
        paths.extend(own.iter().map(|a| normalize(&a.path)));
        paths
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".into() } else { trimmed.to_string() }
}

/// Proxmox's rule: walk from `/` down to `path`; at each level that has entries, those entries
/// (only the propagating ones above the final level) replace what was inherited.
fn privs_from_acl(acl: &[AclSpec], path: &str) -> PrivMap {
    let target = normalize(path);
    let mut levels = vec!["/".to_string()];
    let mut current = String::new();
    for part in target.split('/').filter(|p| !p.is_empty()) {
        current.push('/');
        current.push_str(part);
        levels.push(current.clone());
    }
    let mut result = PrivMap::new();
    for level in &levels {
        let is_final = *level == target;
        let mut found: Option<PrivMap> = None;
        for entry in acl.iter().filter(|a| normalize(&a.path) == *level) {
            if !(is_final || entry.propagate) {
                continue;
            }
            let set = found.get_or_insert_with(PrivMap::new);
            let mut privs: Vec<String> = entry.privs.clone();
            if let Some(role) = &entry.role {
                privs.extend(role_privs(role).unwrap_or_default().into_iter().map(String::from));
            }
            for p in privs {
                let prop = set.get(&p).copied().unwrap_or(false) || entry.propagate;
                set.insert(p, prop);
            }
        }
        if let Some(set) = found {
            result = set;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(path: &str, role: &str, propagate: bool) -> AclSpec {
        AclSpec { path: path.into(), role: Some(role.into()), privs: vec![], propagate }
    }

    fn token(acl: Vec<AclSpec>) -> Token {
        Token::from_spec(&TokenSpec {
            id: "u@pve!t".into(),
            secret: Some("s".into()),
            privsep: true,
            acl,
            user_acl: vec![acl_admin()],
        })
    }

    fn acl_admin() -> AclSpec {
        acl("/", "Administrator", true)
    }

    #[test]
    fn inheritance_and_override() {
        let t = token(vec![acl("/storage", "PVEDatastoreAdmin", true), acl("/storage/nfs", "NoAccess", true)]);
        assert!(t.has("/storage/local", "Datastore.AllocateTemplate"));
        assert!(!t.has("/storage/nfs", "Datastore.Audit"));
        assert!(!t.has("/nodes/pve1", "Sys.Audit"));
        assert!(t.privs_at("/").is_empty());
    }

    #[test]
    fn non_propagating_entries_apply_only_to_their_path() {
        let t = token(vec![acl("/storage", "PVEDatastoreUser", false)]);
        assert!(t.has("/storage", "Datastore.Audit"));
        assert!(!t.has("/storage/local", "Datastore.Audit"));
    }

    #[test]
    fn privsep_intersects_with_the_user() {
        let mut t = token(vec![acl("/", "Administrator", true)]);
        t.user_acl = vec![acl("/", "PVEAuditor", true)];
        assert!(t.has("/nodes/x", "Sys.Audit"));
        assert!(!t.has("/nodes/x", "Sys.Modify"));
        t.privsep = false;
        t.acl.clear();
        assert!(t.has("/nodes/x", "Sys.Audit"));
    }

    #[test]
    fn pveadmin_lacks_network_privileges() {
        let privs = role_privs("PVEAdmin").unwrap();
        assert!(!privs.contains(&"Sys.AccessNetwork") && !privs.contains(&"Sys.Modify"));
        assert!(role_privs("Bogus").is_none());
    }
}
