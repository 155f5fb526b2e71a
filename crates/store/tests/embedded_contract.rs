//! The embedded backend against the store contract, and its sharing between processes' worth of
//! handles on one directory.

use strait_store::{EmbeddedStore, Kind, Store, StoreError};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_meets_the_contract() {
    let dir = temp_dir("contract");
    let store = EmbeddedStore::open(&dir).unwrap();
    strait_store::contract::run_all(&store).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_directory_see_one_store() {
    let dir = temp_dir("shared");
    let a = EmbeddedStore::open(&dir).unwrap();
    let b = EmbeddedStore::open(&dir).unwrap();
    let ra = a
        .create(Kind::IpBlock, "shared", serde_json::json!("a"))
        .await
        .unwrap();
    let from_b = b
        .create(Kind::IpBlock, "shared", serde_json::json!("b"))
        .await;
    assert!(matches!(from_b, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(
        b.get(Kind::IpBlock, "shared")
            .await
            .unwrap()
            .unwrap()
            .revision,
        ra
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
