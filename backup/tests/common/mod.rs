//! Shared by the backup tests: replicas with many small log segments, and
//! the two places a backup goes in tests: a local directory, and a real S3
//! server (s3s-fs) running in this process on 127.0.0.1.

#![allow(dead_code, reason = "each test file uses a part")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use peers_backup::{RecoveryKey, Store};
use peers_engine::{Db, Options, SyncMode};

/// The bucket the in-process S3 server serves.
pub const BUCKET: &str = "backups";
const ACCESS_KEY: &str = "peers-test-access";
const SECRET_KEY: &str = "peers-test-secret";

/// Where a test backs up, and where its objects are on disk (to damage them).
pub struct Place {
    /// The URL given to `Store::open_with`.
    pub url: String,
    /// S3 settings (empty for a directory).
    pub options: Vec<(String, String)>,
    /// The directory holding the objects, by name.
    pub objects: PathBuf,
}

impl Place {
    /// Opens the store.
    pub fn store(&self) -> Store {
        Store::open_with(&self.url, self.options.clone()).expect("open store")
    }

    /// The file of object `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.objects.join(name)
    }
}

/// A local directory.
pub fn local(root: &Path) -> Place {
    Place {
        url: root.display().to_string(),
        options: Vec::new(),
        objects: root.to_owned(),
    }
}

/// Starts an S3 server (s3s-fs over `root`) on 127.0.0.1 in this runtime;
/// the backup goes to `s3://backups/PREFIX` on it.
pub async fn s3(root: &Path, prefix: &str) -> Place {
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
    let service = {
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let server = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = server
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    let options = [
        ("aws_endpoint", format!("http://{address}")),
        ("aws_allow_http", "true".to_owned()),
        ("aws_access_key_id", ACCESS_KEY.to_owned()),
        ("aws_secret_access_key", SECRET_KEY.to_owned()),
        ("aws_region", "us-east-1".to_owned()),
        ("aws_virtual_hosted_style_request", "false".to_owned()),
    ];
    Place {
        url: format!("s3://{BUCKET}/{prefix}"),
        options: options
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
        objects: root.join(BUCKET).join(prefix),
    }
}

/// Options that rotate the log every 4 KiB, so a few hundred changes make
/// many segments.
pub fn small_segments() -> Options {
    Options {
        sync: SyncMode::Relaxed,
        segment_bytes_max: 4096,
        ..Options::default()
    }
}

/// A new database in `dir` with `changes` writes.
pub fn database(dir: &Path, changes: u32) -> Db {
    let db = Db::create(dir, small_segments()).expect("create");
    write(&db, 0, changes);
    db
}

/// Writes `count` changes, rows `from..from + count`.
pub fn write(db: &Db, from: u32, count: u32) {
    for index in from..from + count {
        let mut tx = db.transaction();
        tx.set(
            "notes",
            &format!("n{index}"),
            "title",
            format!("note {index}"),
        )
        .increment("stats", "all", "count", 1);
        tx.commit().expect("commit");
    }
    db.sync().expect("sync");
}

/// `init`, expecting a new backup; returns its recovery key.
pub async fn init_new(db: &Db, store: &Store) -> RecoveryKey {
    let report = peers_backup::init(db, store, None).await.expect("init");
    report
        .new_recovery_key
        .expect("a new backup prints its recovery key")
}

/// One backup run, no progress shown.
pub async fn run(db: &Db, store: &Store) -> peers_backup::RunReport {
    peers_backup::run(db, store, &mut |_, _| {})
        .await
        .expect("backup run")
}

/// Restores into `dir`.
pub async fn restore(
    store: &Store,
    recovery: &RecoveryKey,
    dir: &Path,
    options: peers_backup::RestoreOptions,
) -> peers_backup::Result<peers_backup::RestoreReport> {
    peers_backup::restore(store, recovery, dir, options, &mut |_, _, _| {}).await
}
