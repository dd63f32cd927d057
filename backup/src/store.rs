//! Where backups go: an `object_store` (S3, or a local directory) under a
//! prefix, with every download bounded before it is read.

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};

use crate::error::{Error, ObjectFault, Result};

/// Most objects one folder of a backup may list (a run lists them; more is
/// a store that misbehaves, or a log of 32 TiB).
pub const LIST_OBJECTS_MAX: usize = 1 << 20;

/// One object as listed: its name under the prefix and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `folder/name` under the store's prefix.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// When the store says it was last written (ms since the Unix epoch).
    pub modified_ms: u64,
}

/// An object store and the prefix a backup lives under.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: StorePath,
    url: String,
}

impl Store {
    /// Opens `url`: `s3://BUCKET/PREFIX` (credentials, region and endpoint
    /// from the usual `AWS_*` environment variables), `file:///PATH`, or a
    /// local directory path (created if missing).
    pub fn open(url: &str) -> Result<Store> {
        Store::open_with(url, std::iter::empty::<(String, String)>())
    }

    /// [`Store::open`], with S3 settings on top of the environment's
    /// (`aws_endpoint`, `aws_access_key_id`, `aws_allow_http`, …: the keys
    /// of `object_store`'s `AmazonS3ConfigKey`).
    pub fn open_with(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Store> {
        let refuse = |reason: String| Error::Url {
            url: url.to_owned(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(refuse("no bucket: expected s3://BUCKET/PREFIX".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key
                    .parse()
                    .map_err(|error| refuse(format!("option {key}: {error}")))?;
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|error| refuse(error.to_string()))?;
            let prefix = StorePath::parse(prefix.trim_matches('/'))
                .map_err(|error| refuse(error.to_string()))?;
            return Ok(Store {
                inner: Arc::new(store),
                prefix,
                url: url.to_owned(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(path) => std::path::PathBuf::from(path),
            None if url.contains("://") => {
                return Err(refuse(
                    "this build stores backups in s3://BUCKET/PREFIX or a local directory".into(),
                ));
            }
            None => std::path::PathBuf::from(url),
        };
        if path.as_os_str().is_empty() {
            return Err(refuse("empty path".into()));
        }
        std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        let store =
            LocalFileSystem::new_with_prefix(&path).map_err(|error| refuse(error.to_string()))?;
        Ok(Store {
            inner: Arc::new(store),
            prefix: StorePath::default(),
            url: url.to_owned(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> StorePath {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.child(part);
        }
        path
    }

    /// Writes (or replaces) `name`. Never conditional: a name is written by
    /// one device only (names carry the device), so no PUT races another.
    pub(crate) async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner
            .put(&self.path(name), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Reads `name` whole, refusing (before downloading) an object over
    /// `max` bytes. A missing object is [`ObjectFault::Missing`].
    pub(crate) async fn get(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let result = match self.inner.get(&self.path(name)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::object(name, ObjectFault::Missing));
            }
            Err(error) => return Err(error.into()),
        };
        let bytes = result.meta.size;
        if bytes > max {
            return Err(Error::object(name, ObjectFault::TooLarge { bytes, max }));
        }
        let mut body = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            // The size above came from the store too: hold it to it.
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(Error::object(
                    name,
                    ObjectFault::TooLarge {
                        bytes: body.len() as u64 + chunk.len() as u64,
                        max,
                    },
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Deletes `name` (a missing object is not an error).
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The objects in folder `dir`, at most [`LIST_OBJECTS_MAX`], sorted by name.
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let folder = self.path(dir);
        let mut stream = self.inner.list(Some(&folder));
        let mut listed = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let Some(parts) = meta.location.prefix_match(&folder) else {
                continue;
            };
            let parts: Vec<String> = parts.map(|part| part.as_ref().to_owned()).collect();
            // Only direct children: a backup writes no deeper names.
            let [leaf] = parts.as_slice() else {
                continue;
            };
            if listed.len() == LIST_OBJECTS_MAX {
                return Err(Error::TooManyObjects {
                    dir: dir.to_owned(),
                    max: LIST_OBJECTS_MAX,
                });
            }
            listed.push(Listed {
                name: format!("{dir}/{leaf}"),
                bytes: meta.size,
                modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
            });
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }
}
