//! The editing desk's content pages: statements, announcements, FAQ, referrals, contacts,
//! journal, accounts and tokens. Sign-in and the session live in `desk`.

use axum::Router;

use crate::web::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
}
