//! The two backends every trait suite of this directory runs on (except `contract.rs`, which
//! also tells the stand-in apart): a fresh SQLite file, and MongoDB (nx-27017 unless `MONGODB_URI`
//! names a real server). `contract!(test_a, test_b)` makes `sqlite::test_a`, `mongo::test_a`, …
//! from `async fn test_a(store: &impl Trait)` functions of the including file.

use mediabus_store::{MongoStore, SqliteStore};
use mediabus_testkit::MongoServer;

/// A store on a new SQLite file in a temp dir (kept as long as the returned guard).
pub async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).await.unwrap();
    (store, dir)
}

/// A store on a new MongoDB database (the server lives as long as the returned guard).
pub async fn mongo_store() -> (MongoStore, MongoServer) {
    let server = MongoServer::start();
    let store = MongoStore::connect(server.uri(), server.database()).await.unwrap();
    if server.is_stand_in() {
        // nx-27017 breaks every insert once a compound index ending in `_id` exists (see
        // `contract.rs`): drop the listing indexes there; real MongoDB keeps them.
        store.database().collection::<mongodb::bson::Document>("media").drop_indexes().await.unwrap();
    }
    (store, server)
}

/// One `#[tokio::test]` per backend for each named contract function.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = crate::backends::sqlite_store().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _server) = crate::backends::mongo_store().await;
                    super::$name(&store).await;
                    // Only reached when the contract passed (a failed run keeps its data to look at).
                    store.database().drop().await.unwrap();
                }
            )*
        }
    };
}
pub(crate) use contract;
