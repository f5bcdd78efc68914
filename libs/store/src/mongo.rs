//! MongoDB backend (MongoDB 6+, official driver), for several machines sharing one store.
//!
//! Collections:
//! - `media`: one document per Media, `_id` = media id, camelCase fields as in DESIGN §4 (the
//!   Prisma model), dates as BSON DateTime, `metadata`/`details` as embedded documents, plus
//!   `storageKey` (service-only).
//! - `idempotency`: `{_id: scope key, mediaId, createdAt}`; `_id` makes the key unique.
//! - `uploads`: `_id` = upload id; `upload_parts`: `{uploadId, partNumber, size, etag}`, unique
//!   on `(uploadId, partNumber)`.
//! - `users`, `refresh_tokens`, `refresh_families`, `login_attempts`: the auth service's
//!   [`crate::UserStore`], described in `mongo/users.rs`.
//! - `leases`, `media_stats`: [`crate::LifecycleStore`], described in `mongo/lifecycle.rs`.
//!
//! Decoding accepts Int32 where this store writes Int64, so documents written by other clients
//! (a NestJS/Prisma service writes `size` as Int32) read back too.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt as _;
use mediabus_contracts::{
    ListFilter, Media, MediaRecord, MediaStatus, MediaType, Page, SortOrder, Timestamp, Variant, Visibility,
};
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde_json::{Map, Number, Value};

use crate::cursor::{CursorKey, TOTAL_CAP, clamp_limit, page_from_overfetch};
use crate::{MediaStore, StoreError, UploadPart, UploadSession, clamp_janitor_limit, non_null};

// `UserStore` for this backend; a child module so it shares the document helpers above.
mod users;
// `ProcessingStore` for this backend (conditional writes of the media processor).
mod processing;
// `LifecycleStore` for this backend (retention, orphans, leases, counters).
mod lifecycle;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// How long to look for a usable server before an operation fails (the driver's default is 30 s,
/// too long for a request a caller is waiting on).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The MongoDB store. Cheap to clone (the driver's client is a shared pool).
#[derive(Clone, Debug)]
pub struct MongoStore {
    db: Database,
    media: Collection<Document>,
    idempotency: Collection<Document>,
    uploads: Collection<Document>,
    parts: Collection<Document>,
}

impl MongoStore {
    /// Connects to `uri` (e.g. `mongodb://127.0.0.1:27017`; `mongodb+srv://` needs this crate's
    /// `mongodb-srv` feature), checks the server answers `ping`, and creates the indexes the
    /// queries use (a no-op when they exist).
    ///
    /// [`StoreError::Backend`] for a malformed URI, an unreachable server or a failed index build.
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(backend)?;
        options.app_name.get_or_insert_with(|| "mediabus".into());
        options.server_selection_timeout.get_or_insert(SERVER_SELECTION_TIMEOUT);
        let client = Client::with_options(options).map_err(backend)?;
        let store = Self::with_database(client.database(database));
        store.health_check().await?;
        store.create_indexes().await?;
        store.create_user_indexes().await?;
        store.create_lifecycle_indexes().await?;
        Ok(store)
    }

    /// A store on an already configured database handle. Creates no indexes: call
    /// [`MongoStore::connect`] once, or create them yourself.
    pub fn with_database(db: Database) -> Self {
        Self {
            media: db.collection("media"),
            idempotency: db.collection("idempotency"),
            uploads: db.collection("uploads"),
            parts: db.collection("upload_parts"),
            db,
        }
    }

    /// The database this store uses.
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        // Each listing filter's equality field first, then the (createdAt, _id) sort and keyset
        // key; MongoDB walks these backwards for the newest-first order.
        let media = [
            ("media_created", doc! { "createdAt": 1, "_id": 1 }),
            ("media_user", doc! { "userId": 1, "createdAt": 1, "_id": 1 }),
            ("media_entity", doc! { "entityId": 1, "entityType": 1, "createdAt": 1, "_id": 1 }),
            ("media_status", doc! { "status": 1, "createdAt": 1, "_id": 1 }),
            ("media_public", doc! { "isPublic": 1, "createdAt": 1, "_id": 1 }),
            // A caller's visibility is read as separate ranges (see `visibility_branches`):
            // `isPublic` right after the equality filter, then the sort key; `status` and `type`
            // after it let the usual filters be checked from the index. New names, as an existing
            // index cannot change its keys.
            (
                "media_user_visible",
                doc! { "userId": 1, "isPublic": 1, "createdAt": 1, "_id": 1, "status": 1, "type": 1 },
            ),
            (
                "media_entity_visible",
                doc! {
                    "entityId": 1, "entityType": 1, "isPublic": 1, "createdAt": 1, "_id": 1, "status": 1, "type": 1
                },
            ),
        ]
        .map(|(name, keys)| index(name, keys, false));
        self.media.create_indexes(media).await.map_err(backend)?;
        self.uploads.create_index(index("uploads_expires", doc! { "expiresAt": 1 }, false)).await.map_err(backend)?;
        self.parts
            .create_index(index("upload_parts_number", doc! { "uploadId": 1, "partNumber": 1 }, true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn upload_exists(&self, upload_id: &str) -> Result<bool, StoreError> {
        let found =
            self.uploads.find_one(doc! { "_id": upload_id }).projection(doc! { "_id": 1 }).await.map_err(backend)?;
        Ok(found.is_some())
    }
}

fn index(name: &str, keys: Document, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_owned()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

fn backend(e: mongodb::error::Error) -> StoreError {
    StoreError::Backend(format!("mongodb: {e}"))
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn corrupt(field: &str, what: &str) -> StoreError {
    StoreError::Backend(format!("mongodb: corrupt document: field {field}: {what}"))
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("{what} {n} exceeds the storable range")))
}

fn date(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.unix_millis())
}

fn opt_str(value: &Option<String>) -> Bson {
    value.as_ref().map_or(Bson::Null, |s| Bson::String(s.clone()))
}

/// JSON to BSON, by hand rather than through extended JSON, so caller metadata such as
/// `{"$date": 1}` is stored as the object it is. Integers become Int64; integers beyond Int64
/// become doubles, as JavaScript callers would see them anyway.
fn json_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(map.iter().map(|(k, v)| (k.clone(), json_to_bson(v))).collect()),
    }
}

/// BSON to JSON, the inverse of [`json_to_bson`]; types this store never writes (dates,
/// ObjectIds written by other clients) become their relaxed extended-JSON form.
fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        Bson::Document(d) => Value::Object(d.iter().map(|(k, v)| (k.clone(), bson_to_json(v))).collect::<Map<_, _>>()),
        other => other.clone().into_relaxed_extjson(),
    }
}

fn opt_json(value: &Option<Value>) -> Bson {
    non_null(value).map_or(Bson::Null, json_to_bson)
}

// Typed field readers: a missing or mistyped required field is a corrupt document.

fn get_str(d: &Document, field: &str) -> Result<String, StoreError> {
    d.get_str(field).map(str::to_owned).map_err(|_| corrupt(field, "expected a string"))
}

fn get_opt_str(d: &Document, field: &str) -> Result<Option<String>, StoreError> {
    match d.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(corrupt(field, "expected a string or null")),
    }
}

fn get_opt_int(d: &Document, field: &str) -> Result<Option<i64>, StoreError> {
    match d.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(i)) => Ok(Some(i64::from(*i))),
        Some(Bson::Int64(i)) => Ok(Some(*i)),
        Some(Bson::Double(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(*f as i64)),
        Some(_) => Err(corrupt(field, "expected an integer")),
    }
}

fn get_u64(d: &Document, field: &str) -> Result<u64, StoreError> {
    get_opt_u64(d, field)?.ok_or_else(|| corrupt(field, "missing"))
}

fn get_opt_u64(d: &Document, field: &str) -> Result<Option<u64>, StoreError> {
    get_opt_int(d, field)?.map(|i| u64::try_from(i).map_err(|_| corrupt(field, "negative"))).transpose()
}

fn get_bool(d: &Document, field: &str) -> Result<bool, StoreError> {
    d.get_bool(field).map_err(|_| corrupt(field, "expected a bool"))
}

fn get_time(d: &Document, field: &str) -> Result<Timestamp, StoreError> {
    match d.get(field) {
        Some(Bson::DateTime(t)) => Ok(Timestamp::from_unix_millis(t.timestamp_millis())),
        // Written as text by some other client.
        Some(Bson::String(s)) => Timestamp::parse(s).ok_or_else(|| corrupt(field, "bad RFC 3339 text")),
        _ => Err(corrupt(field, "expected a date")),
    }
}

fn get_json(d: &Document, field: &str) -> Option<Value> {
    d.get(field).map(bson_to_json).filter(|v| !v.is_null())
}

fn media_to_doc(record: &MediaRecord) -> Result<Document, StoreError> {
    let m = &record.media;
    let variants = m
        .variants
        .iter()
        .map(|v| {
            Ok(Bson::Document(doc! {
                "name": &v.name,
                "url": &v.url,
                "mimeType": &v.mime_type,
                "width": v.width.map(i64::from),
                "height": v.height.map(i64::from),
                "size": to_i64(v.size, "variant size")?,
            }))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(doc! {
        "_id": &m.id,
        "type": m.media_type.as_str(),
        "originalName": &m.original_name,
        "mimeType": &m.mime_type,
        "size": to_i64(m.size, "size")?,
        "url": &m.url,
        "userId": &m.user_id,
        "entityId": opt_str(&m.entity_id),
        "entityType": opt_str(&m.entity_type),
        "metadata": opt_json(&m.metadata),
        "isPublic": m.is_public,
        "status": m.status.as_str(),
        "createdAt": date(m.created_at),
        "updatedAt": date(m.updated_at),
        "checksum": opt_str(&m.checksum),
        "details": opt_json(&m.details),
        "variants": variants,
        "storageKey": opt_str(&record.storage_key),
        "failureReason": opt_str(&m.failure_reason),
    })
}

fn media_from_doc(d: &Document) -> Result<MediaRecord, StoreError> {
    let type_text = get_str(d, "type")?;
    let status_text = get_str(d, "status")?;
    let variants = match d.get("variants") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|item| {
                let v = item.as_document().ok_or_else(|| corrupt("variants", "expected documents"))?;
                let dimension = |field: &str| {
                    get_opt_int(v, field)?
                        .map(|n| u32::try_from(n).map_err(|_| corrupt(field, "out of range")))
                        .transpose()
                };
                Ok(Variant {
                    name: get_str(v, "name")?,
                    url: get_str(v, "url")?,
                    mime_type: get_str(v, "mimeType")?,
                    width: dimension("width")?,
                    height: dimension("height")?,
                    size: get_u64(v, "size")?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        Some(_) => return Err(corrupt("variants", "expected an array")),
    };
    let media = Media {
        id: get_str(d, "_id")?,
        media_type: MediaType::parse(&type_text).ok_or_else(|| corrupt("type", &type_text))?,
        original_name: get_str(d, "originalName")?,
        mime_type: get_str(d, "mimeType")?,
        size: get_u64(d, "size")?,
        url: get_str(d, "url")?,
        user_id: get_str(d, "userId")?,
        entity_id: get_opt_str(d, "entityId")?,
        entity_type: get_opt_str(d, "entityType")?,
        metadata: get_json(d, "metadata"),
        is_public: get_bool(d, "isPublic")?,
        status: MediaStatus::parse(&status_text).ok_or_else(|| corrupt("status", &status_text))?,
        created_at: get_time(d, "createdAt")?,
        updated_at: get_time(d, "updatedAt")?,
        checksum: get_opt_str(d, "checksum")?,
        details: get_json(d, "details"),
        variants,
        failure_reason: get_opt_str(d, "failureReason")?,
    };
    Ok(MediaRecord { media, storage_key: get_opt_str(d, "storageKey")? })
}

fn upload_to_doc(s: &UploadSession) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": &s.upload_id,
        "userId": &s.user_id,
        "storageKey": &s.storage_key,
        "backendUploadId": &s.backend_upload_id,
        "originalName": &s.original_name,
        "declaredSize": s.declared_size.map(|n| to_i64(n, "declared size")).transpose()?,
        "entityId": opt_str(&s.entity_id),
        "entityType": opt_str(&s.entity_type),
        "isPublic": s.is_public,
        "metadata": opt_json(&s.metadata),
        "partSize": to_i64(s.part_size, "part size")?,
        "createdAt": date(s.created_at),
        "expiresAt": date(s.expires_at),
    })
}

fn upload_from_doc(d: &Document) -> Result<UploadSession, StoreError> {
    Ok(UploadSession {
        upload_id: get_str(d, "_id")?,
        user_id: get_str(d, "userId")?,
        storage_key: get_str(d, "storageKey")?,
        backend_upload_id: get_str(d, "backendUploadId")?,
        original_name: get_str(d, "originalName")?,
        declared_size: get_opt_u64(d, "declaredSize")?,
        entity_id: get_opt_str(d, "entityId")?,
        entity_type: get_opt_str(d, "entityType")?,
        is_public: get_bool(d, "isPublic")?,
        metadata: get_json(d, "metadata"),
        part_size: get_u64(d, "partSize")?,
        created_at: get_time(d, "createdAt")?,
        expires_at: get_time(d, "expiresAt")?,
    })
}

/// `q` as a regular expression matching itself literally. Every ASCII punctuation character is
/// backslash-escaped (in PCRE a backslash before a non-alphanumeric always means the character
/// itself), and NUL, which MongoDB refuses inside a pattern, becomes `\x00`.
fn literal_regex(q: &str) -> String {
    let mut out = String::with_capacity(q.len() * 2);
    for c in q.chars() {
        match c {
            '\0' => out.push_str("\\x00"),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The queries of a listing's filter, without the cursor condition: one per alternative of the
/// visibility rule (see [`visibility_branches`]), each ANDed to the filter's fields; one when the
/// rule adds nothing.
fn filter_docs(filter: &ListFilter) -> Vec<Document> {
    let mut query = Document::new();
    match filter.status {
        None => query.insert("status", doc! { "$ne": MediaStatus::Deleted.as_str() }),
        Some(status) => query.insert("status", status.as_str()),
    };
    if let Some(user_id) = &filter.user_id {
        query.insert("userId", user_id);
    }
    if let Some(entity_id) = &filter.entity_id {
        query.insert("entityId", entity_id);
    }
    if let Some(entity_type) = &filter.entity_type {
        query.insert("entityType", entity_type);
    }
    if let Some(media_type) = filter.media_type {
        query.insert("type", media_type.as_str());
    }
    if let Some(is_public) = filter.is_public {
        query.insert("isPublic", is_public);
    }
    if let Some(q) = &filter.q {
        query.insert("originalName", doc! { "$regex": literal_regex(q), "$options": "i" });
    }
    let branches = visibility_branches(&filter.visibility);
    if branches.is_empty() {
        return vec![query];
    }
    // In `$and`, as the filter's own `userId` / `isPublic` may hold a different value.
    branches
        .into_iter()
        .map(|branch| {
            let mut branch_query = query.clone();
            branch_query.insert("$and", vec![branch]);
            branch_query
        })
        .collect()
}

/// The visibility rule as disjoint alternatives: none for `All`, `isPublic` for `PublicOnly`, and
/// for `PublicOr` the public media and the caller's own that are not public. As one
/// `$or: [{isPublic: true}, {userId}]` beside other conditions and a sort, a page depends on the
/// planner merging two ordered index scans, or else sorts every visible match; queried apart, each
/// alternative is one index range read in order (`media_public`, `media_user_visible`,
/// `media_entity_visible`) on any server. `isPublic: false`, not `$ne: true`, keeps the second a
/// point of the index (a document without a boolean `isPublic` does not decode anyway).
fn visibility_branches(visibility: &Visibility) -> Vec<Document> {
    match visibility {
        Visibility::All => vec![],
        Visibility::PublicOnly => vec![doc! { "isPublic": true }],
        Visibility::PublicOr { user_id } => {
            vec![doc! { "isPublic": true }, doc! { "userId": user_id, "isPublic": false }]
        }
    }
}

/// Adds "strictly after `key` in `sort` order" to `query`.
fn add_cursor(query: &mut Document, key: &CursorKey, sort: SortOrder) {
    let op = match sort {
        SortOrder::NewestFirst => "$lt",
        SortOrder::OldestFirst => "$gt",
    };
    let at = DateTime::from_millis(key.created_at_millis);
    let after = doc! { "$or": [ { "createdAt": { op: at } }, { "createdAt": at, "_id": { op: &key.id } } ] };
    match query.get_array_mut("$and") {
        Ok(all) => all.push(Bson::Document(after)),
        Err(_) => {
            query.insert("$and", vec![after]);
        }
    }
}

#[async_trait]
impl MediaStore for MongoStore {
    async fn insert(&self, record: &MediaRecord) -> Result<(), StoreError> {
        match self.media.insert_one(media_to_doc(record)?).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::Conflict(format!("media {} exists", record.media.id))),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        let found = self.media.find_one(doc! { "_id": id }).await.map_err(backend)?;
        found.as_ref().map(media_from_doc).transpose()
    }

    async fn update(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let replaced =
            self.media.replace_one(doc! { "_id": &record.media.id }, media_to_doc(record)?).await.map_err(backend)?;
        if replaced.matched_count == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn replace_if_unchanged(&self, read: &MediaRecord, record: &MediaRecord) -> Result<bool, StoreError> {
        crate::check_newer(read, record)?;
        let id = &record.media.id;
        let filter = doc! {
            "_id": id,
            "status": read.media.status.as_str(),
            "updatedAt": date(read.media.updated_at),
            "storageKey": opt_str(&read.storage_key),
        };
        let replaced = self.media.replace_one(filter, media_to_doc(record)?).await.map_err(backend)?;
        if replaced.matched_count == 1 {
            return Ok(true);
        }
        let exists = self.media.find_one(doc! { "_id": id }).await.map_err(backend)?.is_some();
        if exists { Ok(false) } else { Err(StoreError::NotFound) }
    }

    /// Each alternative of the visibility rule (see [`visibility_branches`]) is counted and paged
    /// on its own, all at once: the first `limit + 1` documents of each, in index order, then
    /// merged here. The alternatives are disjoint, so their counts add up (each stops at
    /// `TOTAL_CAP + 1`, the sum is capped there too).
    async fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let after = filter.cursor.as_deref().map(CursorKey::decode).transpose()?;
        let limit = clamp_limit(filter.limit);
        let dir = match filter.sort {
            SortOrder::NewestFirst => -1,
            SortOrder::OldestFirst => 1,
        };
        let branches = filter_docs(filter).into_iter().map(|mut query| {
            let after = after.as_ref();
            async move {
                // Counting stops after TOTAL_CAP + 1 matches (see `MediaStore::list`): bounded work per page.
                let total = self.media.count_documents(query.clone()).limit(TOTAL_CAP + 1).await.map_err(backend)?;
                if let Some(key) = after {
                    add_cursor(&mut query, key, filter.sort);
                }
                // One extra document tells whether another page follows.
                let docs: Vec<Document> = self
                    .media
                    .find(query)
                    .sort(doc! { "createdAt": dir, "_id": dir })
                    .limit(i64::from(limit) + 1)
                    .await
                    .map_err(backend)?
                    .try_collect()
                    .await
                    .map_err(backend)?;
                Ok::<_, StoreError>((total, docs))
            }
        });
        let pages = futures_util::future::try_join_all(branches).await?;
        let merge = pages.len() > 1;
        let (mut total, mut items) = (0, Vec::new());
        for (count, docs) in pages {
            total += count;
            for d in &docs {
                items.push(media_from_doc(d)?.media);
            }
        }
        if merge {
            // Both orders compare `_id` as MongoDB does (binary strings), so the merge keeps the cursor's order.
            items.sort_by(|a, b| {
                let order = (a.created_at.unix_millis(), &a.id).cmp(&(b.created_at.unix_millis(), &b.id));
                if dir < 0 { order.reverse() } else { order }
            });
        }
        Ok(page_from_overfetch(items, total.min(TOTAL_CAP + 1), limit))
    }

    async fn claim_idempotency(&self, scope_key: &str, media_id: &str) -> Result<Option<String>, StoreError> {
        // Insert-or-read; a claim released between our failed insert and the read makes us try
        // again, so a few rounds always settle it.
        for _ in 0..3 {
            let claim = doc! { "_id": scope_key, "mediaId": media_id, "createdAt": DateTime::now() };
            match self.idempotency.insert_one(claim).await {
                Ok(_) => return Ok(None),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(backend(e)),
            }
            if let Some(existing) = self.idempotency.find_one(doc! { "_id": scope_key }).await.map_err(backend)? {
                return get_str(&existing, "mediaId").map(Some);
            }
        }
        Err(StoreError::Backend(format!("idempotency key {scope_key} keeps changing hands")))
    }

    async fn release_idempotency(&self, scope_key: &str, media_id: &str) -> Result<(), StoreError> {
        self.idempotency.delete_one(doc! { "_id": scope_key, "mediaId": media_id }).await.map(drop).map_err(backend)
    }

    async fn take_over_idempotency(
        &self,
        scope_key: &str,
        stale_media_id: &str,
        media_id: &str,
        claimed_before: Timestamp,
    ) -> Result<bool, StoreError> {
        let before = DateTime::from_millis(claimed_before.unix_millis());
        let filter = doc! { "_id": scope_key, "mediaId": stale_media_id, "createdAt": { "$lt": before } };
        let set = doc! { "$set": { "mediaId": media_id, "createdAt": DateTime::now() } };
        let result = self.idempotency.update_one(filter, set).await.map_err(backend)?;
        Ok(result.matched_count == 1)
    }

    async fn expire_idempotency(&self, claimed_before: Timestamp) -> Result<u64, StoreError> {
        let before = DateTime::from_millis(claimed_before.unix_millis());
        let result = self.idempotency.delete_many(doc! { "createdAt": { "$lt": before } }).await.map_err(backend)?;
        Ok(result.deleted_count)
    }

    async fn create_upload(&self, session: &UploadSession) -> Result<(), StoreError> {
        match self.uploads.insert_one(upload_to_doc(session)?).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::Conflict(format!("upload {} exists", session.upload_id))),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_upload(&self, upload_id: &str) -> Result<Option<UploadSession>, StoreError> {
        let found = self.uploads.find_one(doc! { "_id": upload_id }).await.map_err(backend)?;
        found.as_ref().map(upload_from_doc).transpose()
    }

    async fn record_part(&self, upload_id: &str, part: &UploadPart) -> Result<(), StoreError> {
        if !self.upload_exists(upload_id).await? {
            return Err(StoreError::NotFound);
        }
        let key = doc! { "uploadId": upload_id, "partNumber": i64::from(part.part_number) };
        let set = doc! { "$set": { "size": to_i64(part.size, "part size")?, "etag": &part.etag } };
        // Two first uploads of the same part can race to insert; the loser's upsert fails on the
        // unique index (MongoDB 4.2+ usually retries this itself) and one more try updates.
        let mut tries = 0;
        loop {
            match self.parts.update_one(key.clone(), set.clone()).upsert(true).await {
                Ok(_) => break,
                Err(e) if is_duplicate_key(&e) && tries == 0 => tries += 1,
                Err(e) => return Err(backend(e)),
            }
        }
        // No cross-collection transaction: if the session was deleted meanwhile, take the part
        // back out so no orphan stays behind.
        if !self.upload_exists(upload_id).await? {
            self.parts.delete_one(key).await.map_err(backend)?;
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn list_parts(&self, upload_id: &str) -> Result<Vec<UploadPart>, StoreError> {
        let docs: Vec<Document> = self
            .parts
            .find(doc! { "uploadId": upload_id })
            .sort(doc! { "partNumber": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        docs.iter()
            .map(|d| {
                let number = get_opt_int(d, "partNumber")?.ok_or_else(|| corrupt("partNumber", "missing"))?;
                Ok(UploadPart {
                    part_number: u32::try_from(number).map_err(|_| corrupt("partNumber", "out of range"))?,
                    size: get_u64(d, "size")?,
                    etag: get_str(d, "etag")?,
                })
            })
            .collect()
    }

    async fn delete_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        // Session first: once it is gone record_part refuses new parts, so none outlive it.
        self.uploads.delete_one(doc! { "_id": upload_id }).await.map_err(backend)?;
        self.parts.delete_many(doc! { "uploadId": upload_id }).await.map_err(backend)?;
        Ok(())
    }

    async fn extend_upload(&self, upload_id: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        // Read, then replace on the `expiresAt` read (a compare-and-set): a whole-document
        // replace, because the nx-27017 stand-in does not keep dates written by `$set`.
        for _ in 0..5 {
            let filter = doc! { "_id": upload_id, "expiresAt": { "$gt": date(now) } };
            let Some(found) = self.uploads.find_one(filter).await.map_err(backend)? else { return Ok(false) };
            let mut session = upload_from_doc(&found)?;
            if session.expires_at >= until {
                return Ok(true);
            }
            let read = date(session.expires_at);
            session.expires_at = until;
            let replaced = self
                .uploads
                .replace_one(doc! { "_id": upload_id, "expiresAt": read }, upload_to_doc(&session)?)
                .await
                .map_err(backend)?;
            if replaced.matched_count == 1 {
                return Ok(true);
            }
        }
        Err(StoreError::Conflict(format!("upload {upload_id} changed concurrently")))
    }

    async fn delete_expired_upload(&self, upload_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let deleted = self
            .uploads
            .delete_one(doc! { "_id": upload_id, "expiresAt": { "$lte": date(now) } })
            .await
            .map_err(backend)?;
        if deleted.deleted_count == 1 {
            self.parts.delete_many(doc! { "uploadId": upload_id }).await.map_err(backend)?;
        }
        Ok(deleted.deleted_count == 1)
    }

    async fn expired_uploads(&self, now: Timestamp, limit: u32) -> Result<Vec<UploadSession>, StoreError> {
        let docs: Vec<Document> = self
            .uploads
            .find(doc! { "expiresAt": { "$lte": date(now) } })
            .sort(doc! { "expiresAt": 1, "_id": 1 })
            .limit(i64::from(clamp_janitor_limit(limit)))
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        docs.iter().map(upload_from_doc).collect()
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await.map(drop).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_escaping_keeps_every_character_literal() {
        assert_eq!(literal_regex("a.b*c"), r"a\.b\*c");
        assert_eq!(literal_regex("50%_(x)[y]{2}^$|?+\\/"), r"50\%\_\(x\)\[y\]\{2\}\^\$\|\?\+\\\/");
        assert_eq!(literal_regex("émoji ✓ 1"), "émoji ✓ 1");
        assert_eq!(literal_regex("a\0b"), r"a\x00b");
    }

    #[test]
    fn json_survives_the_trip_through_bson() {
        let value = serde_json::json!({
            "n": 1, "neg": -7, "big": 9_007_199_254_740_993_i64, "f": 1.5, "s": "x", "b": true,
            "null": null, "arr": [1, "two", {"three": 3}], "$date": {"$numberLong": "1"}, "a.b": 1
        });
        assert_eq!(bson_to_json(&json_to_bson(&value)), value);
    }
}
