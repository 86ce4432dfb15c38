//! Authorisation, decided in one place for every write, in the editing desk and the API alike:
//! from the principal's role and scope and what the write touches.

use serde::Serialize;

use crate::domain::ScopeKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The provider's administrators: everything.
    Admin,
    /// The provider's crisis team: recovery work and area-wide announcements.
    Operator,
    /// A town's (or district's) press or citizens' office: only their scope.
    Editor,
    /// Crisis staff and auditors: read the internal pages and the journal.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Editor, Role::Viewer];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The one who acts: a signed-in user or an API token, with the scope it carries.
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    pub user_id: i64,
    /// Shown in the journal: the user name, or `token:<name>` for API tokens.
    pub name: String,
    pub role: Role,
    /// AGS of the towns and districts an editor may change.
    pub scopes: Vec<String>,
}

impl Principal {
    /// The command line acts with full rights, journaled as `cli`.
    pub fn cli() -> Principal {
        Principal { user_id: 0, name: "cli".into(), role: Role::Admin, scopes: Vec::new() }
    }
}

/// Everything that changes data or reads internal data.
#[derive(Clone, Debug)]
pub enum Action<'a> {
    /// Read the editing desk and the journal (editors see their scope's entries only).
    ReadInternal,
    /// Availability statements of a town (8-digit AGS) or district (5-digit AGS).
    EditStatement { ags: &'a str },
    /// Announcements and FAQ entries with their scope.
    EditAnnouncement { scope: &'a ScopeKind, scope_ref: &'a str },
    /// Referrals for residents of a town or district.
    EditReferral { for_ags: &'a str },
    /// Contact channels and offices of a town or district.
    EditContacts { ags: &'a str },
    /// Accounts of other people.
    ManageUsers,
    /// API tokens: one's own (with a scope within one's own) or, for admins, anyone's.
    ManageTokens { for_user: i64, role: Role, scopes: &'a [String] },
    /// The recovery board (procedures, gates, rollout).
    EditRecovery,
    /// A webhook owned by `owner` about these towns (empty: all): one's own, and for editors
    /// only about towns of their scope; admins manage anyone's.
    ManageWebhooks { owner: i64, municipalities: &'a [String] },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Denied;

impl Principal {
    fn covers(&self, ags: &str) -> bool {
        self.scopes.iter().any(|s| s == ags)
    }
}

/// Allows or denies `action` for `who`. Every write goes through here.
pub fn authorize(who: &Principal, action: &Action) -> Result<(), Denied> {
    let allowed = match (who.role, action) {
        (Role::Admin, _) => true,
        (_, Action::ReadInternal) => true,
        (Role::Viewer, _) => false,
        (Role::Operator, Action::ManageUsers) => false,
        (Role::Operator, Action::ManageTokens { for_user, role, .. }) => {
            *for_user == who.user_id && *role != Role::Admin
        }
        (Role::Operator, Action::ManageWebhooks { owner, .. }) => *owner == who.user_id,
        // The crisis team speaks for the whole area and runs the recovery.
        (Role::Operator, _) => true,
        (Role::Editor, Action::EditStatement { ags }) => who.covers(ags),
        (Role::Editor, Action::EditAnnouncement { scope, scope_ref }) => match scope {
            ScopeKind::District | ScopeKind::Municipality => who.covers(scope_ref),
            ScopeKind::Area | ScopeKind::Service => false,
        },
        (Role::Editor, Action::EditReferral { for_ags }) => who.covers(for_ags),
        (Role::Editor, Action::EditContacts { ags }) => who.covers(ags),
        (Role::Editor, Action::ManageTokens { for_user, role, scopes }) => {
            *for_user == who.user_id && *role == Role::Editor && scopes.iter().all(|s| who.covers(s))
        }
        (Role::Editor, Action::ManageUsers | Action::EditRecovery) => false,
        (Role::Editor, Action::ManageWebhooks { owner, municipalities }) => {
            *owner == who.user_id && !municipalities.is_empty() && municipalities.iter().all(|m| who.covers(m))
        }
    };
    if allowed { Ok(()) } else { Err(Denied) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, scopes: &[&str]) -> Principal {
        Principal { user_id: 7, name: "x".into(), role, scopes: scopes.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn editors_act_only_inside_their_scope() {
        let menden = p(Role::Editor, &["05962040"]);
        assert!(authorize(&menden, &Action::EditStatement { ags: "05962040" }).is_ok());
        assert!(authorize(&menden, &Action::EditStatement { ags: "05962032" }).is_err());
        assert!(authorize(&menden, &Action::EditStatement { ags: "05962" }).is_err(), "not the district");
        let town = ScopeKind::Municipality;
        assert!(authorize(&menden, &Action::EditAnnouncement { scope: &town, scope_ref: "05962040" }).is_ok());
        assert!(authorize(&menden, &Action::EditAnnouncement { scope: &ScopeKind::Area, scope_ref: "" }).is_err());
        assert!(authorize(&menden, &Action::ManageUsers).is_err());
        assert!(authorize(&menden, &Action::EditRecovery).is_err());
        let own = ["05962040".to_string()];
        let other = ["05962032".to_string()];
        assert!(authorize(&menden, &Action::ManageTokens { for_user: 7, role: Role::Editor, scopes: &own }).is_ok());
        assert!(authorize(&menden, &Action::ManageTokens { for_user: 7, role: Role::Editor, scopes: &other }).is_err());
        assert!(authorize(&menden, &Action::ManageTokens { for_user: 8, role: Role::Editor, scopes: &own }).is_err());
        assert!(authorize(&menden, &Action::ManageTokens { for_user: 7, role: Role::Admin, scopes: &own }).is_err());
    }

    #[test]
    fn webhooks_are_their_owners_and_editors_keep_to_their_towns() {
        let menden = p(Role::Editor, &["05962040"]);
        let own = ["05962040".to_string()];
        let other = ["05962032".to_string()];
        assert!(authorize(&menden, &Action::ManageWebhooks { owner: 7, municipalities: &own }).is_ok());
        assert!(
            authorize(&menden, &Action::ManageWebhooks { owner: 7, municipalities: &[] }).is_err(),
            "not the whole area"
        );
        assert!(authorize(&menden, &Action::ManageWebhooks { owner: 7, municipalities: &other }).is_err());
        assert!(authorize(&menden, &Action::ManageWebhooks { owner: 8, municipalities: &own }).is_err());
        let operator = p(Role::Operator, &[]);
        assert!(authorize(&operator, &Action::ManageWebhooks { owner: 7, municipalities: &[] }).is_ok());
        assert!(authorize(&operator, &Action::ManageWebhooks { owner: 8, municipalities: &[] }).is_err());
        assert!(authorize(&p(Role::Admin, &[]), &Action::ManageWebhooks { owner: 8, municipalities: &[] }).is_ok());
        assert!(authorize(&p(Role::Viewer, &[]), &Action::ManageWebhooks { owner: 7, municipalities: &[] }).is_err());
    }

    #[test]
    fn viewers_only_read_and_admins_do_everything() {
        let viewer = p(Role::Viewer, &["05962040"]);
        assert!(authorize(&viewer, &Action::ReadInternal).is_ok());
        assert!(authorize(&viewer, &Action::EditStatement { ags: "05962040" }).is_err());
        let admin = p(Role::Admin, &[]);
        assert!(authorize(&admin, &Action::ManageUsers).is_ok());
        assert!(authorize(&admin, &Action::EditStatement { ags: "05962040" }).is_ok());
        let operator = p(Role::Operator, &[]);
        assert!(authorize(&operator, &Action::EditAnnouncement { scope: &ScopeKind::Area, scope_ref: "" }).is_ok());
        assert!(authorize(&operator, &Action::EditRecovery).is_ok());
        assert!(authorize(&operator, &Action::ManageUsers).is_err());
    }
}
