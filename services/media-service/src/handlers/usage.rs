//! Per-user quotas (DESIGN §14, `[quota]`): the check every upload makes before it stores a byte,
//! and `media.usage {userId}` → `{bytes, count, openUploads, quotaBytes, quotaCount,
//! quotaOpenUploads}` (`GET /api/users/{userId}/usage`).

use mediabus_contracts::Timestamp;
use mediabus_contracts::lifecycle::{Usage, UsageRequest};
use mediabus_rpc::Ctx;

use crate::AppState;
use crate::access::Caller;
use crate::error::{MediaError, Result};

/// What an upload is about to add to its owner's usage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Adding {
    /// Bytes of the new original (0 when not known yet, e.g. `upload.create` without a size).
    pub bytes: u64,
    /// Media it will create (1 for every upload).
    pub count: u64,
    /// Chunked uploads it opens (1 for `upload.create`).
    pub open_uploads: u64,
}

/// Refuses with 413 `QUOTA_EXCEEDED` when `user_id`'s usage plus `adding` would pass a limit of
/// `[quota]`. No store query when every limit is off. Errors: the store's.
pub async fn check(state: &AppState, user_id: &str, adding: Adding) -> Result<()> {
    let quota = &state.quota;
    if quota.max_bytes == 0 && quota.max_count == 0 && quota.max_open_uploads == 0 {
        return Ok(());
    }
    let used = state.store.usage(user_id, Timestamp::now()).await?;
    let over = |limit: u64, used: u64, adding: u64| limit > 0 && adding > 0 && used.saturating_add(adding) > limit;
    if over(quota.max_count, used.count, adding.count) {
        return Err(MediaError::QuotaExceeded(format!("media quota reached: {} of {}", used.count, quota.max_count)));
    }
    if over(quota.max_bytes, used.bytes, adding.bytes) {
        return Err(MediaError::QuotaExceeded(format!(
            "storage quota exceeded: {} + {} bytes > {}",
            used.bytes, adding.bytes, quota.max_bytes
        )));
    }
    if over(quota.max_open_uploads, used.open_uploads, adding.open_uploads) {
        return Err(MediaError::QuotaExceeded(format!(
            "open uploads quota reached: {} of {}",
            used.open_uploads, quota.max_open_uploads
        )));
    }
    Ok(())
}

/// `media.usage {userId}`: the user's stored bytes, media and open uploads, and its limits (0:
/// none). The user itself or an admin. Errors: 401 without a token, 403 for another user.
pub async fn usage(ctx: Ctx<AppState>, input: UsageRequest) -> Result<Usage> {
    let caller = Caller::from_ctx(&ctx, &ctx.state.verifier)?;
    let who = caller.require()?;
    if !who.is_admin() && who.user_id != input.user_id {
        return Err(MediaError::Forbidden("only the user or an admin may read a user's usage"));
    }
    let used = ctx.state.store.usage(&input.user_id, Timestamp::now()).await?;
    let quota = &ctx.state.quota;
    Ok(Usage {
        bytes: used.bytes,
        count: used.count,
        open_uploads: used.open_uploads,
        quota_bytes: quota.max_bytes,
        quota_count: quota.max_count,
        quota_open_uploads: quota.max_open_uploads,
    })
}
