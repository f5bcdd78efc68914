//! One page of a listing on SQLite (`MediaStore::list`): the filter as a `WHERE` clause split
//! into disjoint visibility branches, each read as one index range in order and merged, with
//! bounded counts from covering indexes.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use mediabus_contracts::{ListFilter, Media, MediaStatus, Page, SortOrder, Visibility};

use super::{MEDIA_COLUMNS, backend, media_from_row};
use crate::StoreError;
use crate::cursor::{CursorKey, TOTAL_CAP, clamp_limit, page_from_overfetch};

/// A listing's `WHERE` clause without the cursor condition, split so that each part is one
/// index-ordered read (see [`list_statements`]).
struct ListWhere {
    /// Conditions (ANDed) of every match: the filter's fields.
    conds: Vec<String>,
    /// The visibility rule as disjoint alternatives, each ANDed to `conds`; empty when the rule
    /// adds nothing (`All`). `PublicOr` is two: `is_public = 1`, and the caller's own media that
    /// are not public. Written as one `(is_public = 1 OR user_id = ?)`, SQLite plans it as a
    /// MULTI-INDEX OR whose matches all go through a temp B-tree sort before the LIMIT, so a page
    /// costs as much as every visible match; each alternative alone is a range of one index
    /// (migration 6) read in `(created_at, id)` order, stopping at the LIMIT.
    branches: Vec<String>,
    /// The parameters of `conds` and `branches` (`?1`, `?2`, ..), shared by every branch.
    args: Vec<SqlValue>,
}

/// The `WHERE` clause of a listing, without the cursor condition (see [`ListWhere`]).
fn filter_clause(filter: &ListFilter) -> ListWhere {
    let mut conds = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    fn bind(args: &mut Vec<SqlValue>, value: impl Into<SqlValue>) -> String {
        args.push(value.into());
        format!("?{}", args.len())
    }
    match filter.status {
        None => conds.push(format!("status <> '{}'", MediaStatus::Deleted.as_str())),
        Some(status) => conds.push(format!("status = {}", bind(&mut args, status.as_str().to_owned()))),
    }
    if let Some(user_id) = &filter.user_id {
        conds.push(format!("user_id = {}", bind(&mut args, user_id.clone())));
    }
    if let Some(entity_id) = &filter.entity_id {
        conds.push(format!("entity_id = {}", bind(&mut args, entity_id.clone())));
    }
    if let Some(entity_type) = &filter.entity_type {
        conds.push(format!("entity_type = {}", bind(&mut args, entity_type.clone())));
    }
    if let Some(media_type) = filter.media_type {
        conds.push(format!("type = {}", bind(&mut args, media_type.as_str().to_owned())));
    }
    if let Some(is_public) = filter.is_public {
        conds.push(format!("is_public = {}", bind(&mut args, i64::from(is_public))));
    }
    if let Some(q) = &filter.q {
        conds.push(format!("instr(name_folded, {}) > 0", bind(&mut args, q.to_lowercase())));
    }
    let branches = match &filter.visibility {
        Visibility::All => vec![],
        Visibility::PublicOnly => vec!["is_public = 1".to_owned()],
        // `is_public = 0`, not `<> 1`: an equality keeps the branch one index range (the store
        // writes only 0 and 1), and makes the branches disjoint, so counts add up.
        Visibility::PublicOr { user_id } => {
            vec![
                "is_public = 1".to_owned(),
                format!("user_id = {} AND is_public = 0", bind(&mut args, user_id.clone())),
            ]
        }
    };
    ListWhere { conds, branches, args }
}

/// The statements of one listing page, built by [`list_statements`] and run by `list_blocking`.
pub(super) struct ListStatements {
    /// One bounded `COUNT` per branch of the filter (see [`ListWhere`]). Parameters: `args`,
    /// then how many matches the statement may count at most.
    pub(super) counts: Vec<String>,
    /// The first `limit + 1` matches past the cursor, in order (one extra row tells whether
    /// another page follows). Parameters: `args`, then `page_args`.
    pub(super) page: String,
    /// The filter's parameters.
    pub(super) args: Vec<SqlValue>,
    /// The cursor's (created_at, id), if any, then `limit + 1`.
    pub(super) page_args: Vec<SqlValue>,
}

/// The statements of a page of `filter` after `after`, `limit` items long (see
/// [`ListStatements`]). Each branch of the visibility rule is read in index order: its page rows
/// are the first `limit + 1` of an index range past the cursor, and the branches are merged by
/// one `UNION ALL` whose outer sort sees at most `limit + 1` rows from each; its count reads an
/// index that holds every column the visibility rule and the usual filters test (status, type,
/// owner), so it touches no table rows (migration 6).
pub(super) fn list_statements(filter: &ListFilter, after: Option<&CursorKey>, limit: u32) -> ListStatements {
    let ListWhere { conds, branches, args } = filter_clause(filter);
    let conds = conds.join(" AND ");
    let wheres: Vec<String> = if branches.is_empty() {
        vec![conds]
    } else {
        branches.iter().map(|branch| format!("{conds} AND {branch}")).collect()
    };
    let next = args.len() + 1;
    let counts = wheres
        .iter()
        .map(|condition| format!("SELECT COUNT(*) FROM (SELECT 1 FROM media WHERE {condition} LIMIT ?{next})"))
        .collect();

    let (cmp, dir) = match filter.sort {
        SortOrder::NewestFirst => ("<", "DESC"),
        SortOrder::OldestFirst => (">", "ASC"),
    };
    let mut page_args: Vec<SqlValue> = Vec::new();
    // A row value, not `created_at < ?t OR (created_at = ?t AND id < ?i)`: SQLite makes it a
    // bound of the index range, so a deep page seeks to the cursor instead of stepping over
    // every earlier entry.
    let cursor = match after {
        Some(key) => {
            page_args.extend([key.created_at_millis.into(), key.id.clone().into()]);
            format!(" AND (created_at, id) {cmp} (?{next}, ?{})", next + 1)
        }
        None => String::new(),
    };
    page_args.push(i64::from(limit + 1).into());
    let order = format!("ORDER BY created_at {dir}, id {dir} LIMIT ?{}", args.len() + page_args.len());
    let page = match wheres.as_slice() {
        [condition] => format!("SELECT {MEDIA_COLUMNS} FROM media WHERE {condition}{cursor} {order}"),
        branches => {
            let selects: Vec<String> = branches
                .iter()
                .map(|condition| {
                    format!("SELECT * FROM (SELECT {MEDIA_COLUMNS} FROM media WHERE {condition}{cursor} {order})")
                })
                .collect();
            format!("{} {order}", selects.join(" UNION ALL "))
        }
    };
    ListStatements { counts, page, args, page_args }
}

/// A page of a listing (see [`list_statements`]), its count and items read in one transaction,
/// so from the same snapshot.
pub(super) fn list_blocking(
    conn: &mut Connection,
    filter: &ListFilter,
    after: Option<CursorKey>,
) -> Result<Page, StoreError> {
    let limit = clamp_limit(filter.limit);
    let ListStatements { counts, page, args, page_args } = list_statements(filter, after.as_ref(), limit);
    let tx = conn.transaction().map_err(backend)?;

    // The branches are disjoint: their counts add up. Each stops after what is left of
    // TOTAL_CAP + 1 (see `MediaStore::list`), so the work is bounded whatever the table size.
    let cap = TOTAL_CAP + 1;
    let mut total = 0;
    for sql in &counts {
        if total >= cap {
            break;
        }
        let room = SqlValue::Integer(i64::try_from(cap - total).unwrap_or(i64::MAX));
        let mut stmt = tx.prepare_cached(sql).map_err(backend)?;
        let n: i64 = stmt.query_row(params_from_iter(args.iter().chain([&room])), |r| r.get(0)).map_err(backend)?;
        total += u64::try_from(n).unwrap_or_default();
    }

    let items = {
        let mut stmt = tx.prepare_cached(&page).map_err(backend)?;
        let rows = stmt.query_map(params_from_iter(args.iter().chain(&page_args)), media_from_row).map_err(backend)?;
        rows.map(|r| r.map(|rec| rec.media)).collect::<Result<Vec<Media>, _>>().map_err(backend)?
    };
    tx.finish().map_err(backend)?;

    Ok(page_from_overfetch(items, total, limit))
}

#[cfg(test)]
mod tests {
    use mediabus_contracts::MediaType;

    use super::*;

    /// SQLite's plan of each statement of a listing, one line per statement.
    fn plans(conn: &Connection, filter: &ListFilter, after: Option<&CursorKey>) -> Vec<String> {
        let statements = list_statements(filter, after, 20);
        statements
            .counts
            .iter()
            .chain([&statements.page])
            .map(|sql| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                let nulls = vec![SqlValue::Null; stmt.parameter_count()];
                let rows = stmt.query_map(params_from_iter(nulls), |r| r.get::<_, String>(3)).unwrap();
                rows.map(Result::unwrap).collect::<Vec<_>>().join(" / ")
            })
            .collect()
    }

    /// Issue 13: a caller's listings are index ranges read in order, whatever the table size:
    /// no `OR` of indexes, no scan of the table or of a whole index, the cursor as a bound of the
    /// range, and counts from covering indexes (no table rows).
    #[tokio::test]
    async fn listings_read_index_ranges_and_count_from_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let _store = crate::SqliteStore::open(&path).await.unwrap();
        let conn = super::super::connect(&path).unwrap();
        let caller = || ListFilter::new(Visibility::PublicOr { user_id: "u1".into() });
        let by_entity = ListFilter { entity_id: Some("e".into()), entity_type: Some("post".into()), ..caller() };
        let by_user = ListFilter { user_id: Some("u2".into()), ..caller() };
        let typed = ListFilter { media_type: Some(MediaType::Image), sort: SortOrder::OldestFirst, ..caller() };
        let key = CursorKey { created_at_millis: 5, id: "x".into() };
        let cases = [
            ("findAll", caller(), ["media_public", "media_user_visible"]),
            ("findByEntity", by_entity, ["media_entity_visible", "media_entity_visible"]),
            ("findByUser", by_user, ["media_user_visible", "media_user_visible"]),
            ("findAll by type, oldest first", typed, ["media_public", "media_user_visible"]),
        ];
        for (what, filter, indexes) in cases {
            for after in [None, Some(&key)] {
                let plans = plans(&conn, &filter, after);
                let [count_public, count_own, page] = plans.as_slice() else { panic!("{what}: {plans:?}") };
                for (plan, index) in [(count_public, indexes[0]), (count_own, indexes[1])] {
                    assert!(plan.contains(&format!("USING COVERING INDEX {index} (")), "{what} count: {plan}");
                }
                for index in indexes {
                    assert!(page.contains(&format!("USING INDEX {index} (")), "{what} page: {page}");
                }
                for plan in &plans {
                    assert!(!plan.contains("MULTI-INDEX OR") && !plan.contains("SCAN media"), "{what}: {plan}");
                }
                if after.is_some() {
                    assert_eq!(page.matches("(created_at,id)").count(), 2, "{what}: cursor bounds the ranges: {page}");
                }
            }
        }
    }
}
