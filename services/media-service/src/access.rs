//! Who may see and change what (DESIGN §6).
//!
//! - Private media: visible to the owner and admins only; everyone else gets 404 (no existence leak).
//! - Public media: readable by anyone, anonymous included.
//! - Update/remove: owner or admin.
//! - `userId` in a payload is honoured only for admin and service callers, who act for that user.

use mediabus_auth::{Identity, Role, Verifier};
use mediabus_contracts::{Media, MediaStatus, Visibility};
use mediabus_rpc::Ctx;
use mediabus_store::MediaJson;

use crate::error::{MediaError, Result};

/// The caller of one request, after token verification.
#[derive(Debug, Clone)]
pub struct Caller(Option<Identity>);

impl Caller {
    /// Reads `Authorization: Bearer` from the request's NATS headers. No header: anonymous.
    /// A header with a bad token: 401 (never downgraded to anonymous).
    pub fn from_ctx<S>(ctx: &Ctx<S>, verifier: &Verifier) -> Result<Self> {
        let identity = verifier.identify(ctx.bearer_token(), ctx.header("Authorization").is_some())?;
        Ok(Self(identity))
    }

    /// The caller, or 401 for anonymous requests.
    pub fn require(&self) -> Result<&Identity> {
        self.0.as_ref().ok_or(MediaError::Unauthenticated(mediabus_auth::AuthError::Missing))
    }

    /// The identity requests are judged as: for admin and service callers naming a `userId`,
    /// that user (a service then has exactly that user's rights; an admin keeps admin rights).
    pub fn acting_for(self, requested_user: Option<&str>) -> Option<Identity> {
        let me = self.0?;
        match requested_user {
            Some(user) if me.may_act_for_others() && user != me.user_id => {
                let roles = if me.is_admin() { me.roles.clone() } else { vec![Role::User] };
                if me.has(Role::Service) {
                    tracing::info!(service = %me.user_id, acting_for = %user, "service acts for a user");
                }
                Some(Identity { user_id: user.to_owned(), roles })
            }
            _ => Some(me),
        }
    }
}

/// The [`mediabus_rpc::Router::guard`] of subjects whose bodies are file bytes: 401 unless the
/// request carries a valid token, decided before megabytes of body are decoded.
pub fn require_token(ctx: &Ctx<crate::AppState>) -> Result<()> {
    Caller::from_ctx(ctx, &ctx.state.verifier)?.require().map(drop)
}

/// What the rules read of a document: from a [`Media`] or a [`MediaJson`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub owner: &'a str,
    pub is_public: bool,
    pub status: MediaStatus,
}

impl<'a> From<&'a Media> for Facts<'a> {
    fn from(media: &'a Media) -> Self {
        Self { owner: &media.user_id, is_public: media.is_public, status: media.status }
    }
}

impl<'a> From<&'a MediaJson> for Facts<'a> {
    fn from(doc: &'a MediaJson) -> Self {
        Self { owner: &doc.user_id, is_public: doc.is_public, status: doc.status }
    }
}

/// Whether `who` may read `media` (deleted media are invisible to every read).
pub fn can_read<'a>(who: Option<&Identity>, media: impl Into<Facts<'a>>) -> bool {
    let media = media.into();
    media.status != MediaStatus::Deleted && (media.is_public || can_write(who, media))
}

/// Whether `who` may update or remove `media`: its owner or an admin.
pub fn can_write<'a>(who: Option<&Identity>, media: impl Into<Facts<'a>>) -> bool {
    let owner = media.into().owner;
    who.is_some_and(|w| w.is_admin() || w.user_id == owner)
}

/// Which documents a listing by `who` may return.
pub fn visibility(who: Option<&Identity>) -> Visibility {
    match who {
        None => Visibility::PublicOnly,
        Some(w) if w.is_admin() => Visibility::All,
        Some(w) => Visibility::PublicOr { user_id: w.user_id.clone() },
    }
}
