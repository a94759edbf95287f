//! S3, on the s3s crate: it parses requests, checks SigV4 signatures
//! (headers and presigned URLs) against the secret of the request's access
//! key, and writes the XML; this module maps each operation onto the
//! user's files.
//!
//! A bucket is one of the user's top-level folders and a key the rest of
//! the path: `s3://photos/2024/a.jpg` is the file `photos/2024/a.jpg`. The
//! bucket `shared` holds what others share (`shared/OWNER/…`), as in `dfs`.
//! Path-style addressing only (`https://HOST:PORT/BUCKET/KEY`).
//!
//! - ETag: the hex MD5 of the bytes; a multipart upload's is S3's
//!   `MD5(part MD5s)-N`, kept in the manifest's `meta` with the content type
//!   and `x-amz-meta-*`. A file stored by `dfs` has no MD5: its ETag is its
//!   SHA-256 (`Manifest::etag`), 64 hex digits no client takes for an MD5.
//! - CopyObject within one owner's files shares the data (as `dfs cp`: no
//!   byte moves); across owners, or with new metadata, it copies the bytes.
//! - Multipart uploads are kept on the server that received
//!   CreateMultipartUpload (`http/uploads/ID/`: `upload.json` and one file
//!   per part), so a client sends all its parts to one endpoint, as aws,
//!   rclone and boto3 do. CompleteMultipartUpload joins the parts in the
//!   kernel (`copy_file_range`) and stores the result with one PUT.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use md5::Digest;
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use serde::{Deserialize, Serialize};

use super::{spool, Gateway};
use crate::client::{Client, DirItem, Object};
use crate::error::{Error, ErrorKind};
use crate::protocol::{Manifest, ObjectMeta};
use crate::sharing::SHARED;

/// Parts of a multipart upload, at most (S3's limit).
const MAX_PARTS: i32 = 10_000;
/// Every part but the last is at least this big (S3's limit).
const MIN_PART: u64 = 5 << 20;
/// Keys a listing returns at most per page (S3's default and limit).
const MAX_KEYS: i32 = 1000;
/// How far a signed request's date may be from the server's clock (S3's limit).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// An upload nobody completed or aborted is removed after this.
const UPLOAD_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The S3 service of `gateway`: s3s with our keys and operations.
pub fn service(gateway: Arc<Gateway>) -> S3Service {
    let mut builder = S3ServiceBuilder::new(RingS3 {
        gateway: Arc::clone(&gateway),
    });
    builder.set_auth(Keys(gateway));
    builder.build()
}

/// Looks up the secret of an access key (cluster state, see `accounts`).
struct Keys(Arc<Gateway>);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.server.accounts.key(access_key) {
            Some((_, secret)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

struct RingS3 {
    gateway: Arc<Gateway>,
}

impl RingS3 {
    /// The user a signed request acts for, and the client acting for them.
    async fn client<T>(&self, req: &S3Request<T>) -> S3Result<(String, Arc<Client>)> {
        let access = req
            .credentials
            .as_ref()
            .ok_or_else(|| s3_error!(AccessDenied, "anonymous requests are refused"))?;
        check_clock(&req.headers)?;
        let (user, _) = (self.gateway.server.accounts)
            .key(&access.access_key)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        let client = self.gateway.client(&user).await.map_err(s3_err)?;
        Ok((user, client))
    }

    /// The error for `e` from an object request: NoSuchBucket instead of
    /// NoSuchKey when the bucket itself is missing.
    async fn object_err(&self, client: &Client, bucket: &str, e: Error) -> S3Error {
        if is_not_found(&e) && !bucket_exists(client, bucket).await {
            return s3_error!(NoSuchBucket);
        }
        s3_err(e)
    }

    fn upload_dir(&self, id: &str) -> S3Result<PathBuf> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(self.gateway.uploads_dir().join(id))
    }

    /// An upload of `user`'s to `bucket`/`key`, as CreateMultipartUpload
    /// recorded it; NoSuchUpload for anyone else's.
    fn upload(&self, user: &str, bucket: &str, key: &str, id: &str) -> S3Result<(PathBuf, Upload)> {
        let dir = self.upload_dir(id)?;
        let text = std::fs::read(dir.join("upload.json")).map_err(|_| s3_error!(NoSuchUpload))?;
        let upload: Upload = serde_json::from_slice(&text).map_err(|_| s3_error!(NoSuchUpload))?;
        if upload.user != user || upload.bucket != bucket || upload.key != key {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok((dir, upload))
    }
}

/// A multipart upload in progress, as `upload.json` records it.
#[derive(Serialize, Deserialize)]
struct Upload {
    user: String,
    bucket: String,
    key: String,
    meta: ObjectMeta,
    /// Seconds since the Unix epoch.
    initiated: u64,
}

/// One stored part, as `NNNNN.json` records it beside the part's bytes.
#[derive(Serialize, Deserialize)]
struct PartRecord {
    size: u64,
    md5: [u8; 16],
    stored: u64,
}

#[async_trait::async_trait]
impl S3 for RingS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let (user, client) = self.client(&req).await?;
        let mut buckets = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = client
                .list_dir_page("", after.as_deref())
                .await
                .map_err(s3_err)?;
            for item in page {
                if let DirItem::Folder(name) = item {
                    if s3s::path::check_bucket_name(&name) {
                        buckets.push(Bucket {
                            name: Some(name),
                            creation_date: Some(timestamp(0)),
                            bucket_region: None,
                        });
                    }
                }
            }
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner(&user)),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let (_, client) = self.client(&req).await?;
        let bucket = &req.input.bucket;
        if bucket == SHARED {
            return Err(s3_error!(
                BucketAlreadyExists,
                "'shared' holds what others share with you"
            ));
        }
        if client.folder_exists(bucket).await.map_err(s3_err)? {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        match client.folder(bucket, true).await {
            Ok(()) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{bucket}")),
            })),
            // A file of that name at the top.
            Err(e) if e.kind() == ErrorKind::BadRequest => {
                Err(s3_error!(BucketAlreadyExists, "{e}"))
            }
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let (_, client) = self.client(&req).await?;
        let bucket = &req.input.bucket;
        require_bucket(&client, bucket).await?;
        match client.folder(bucket, false).await {
            Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
            Err(e) if e.kind() == ErrorKind::BadRequest => Err(s3_error!(BucketNotEmpty, "{e}")),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let (_, client) = self.client(&req).await?;
        require_bucket(&client, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let (_, client) = self.client(&req).await?;
        require_bucket(&client, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (_, client) = self.client(&req).await?;
        let mut input = req.input;
        let body = input.body.take();
        // Refusals before the body is taken in (a bad name, no bucket, over
        // quota): a small body is read and dropped first, so closing the
        // connection does not reset it under the answer.
        let admitted = async {
            let name = object_name(&input.bucket, &input.key)?;
            require_bucket(&client, &input.bucket).await?;
            if let Some(len) = input.content_length.filter(|_| !input.key.ends_with('/')) {
                client
                    .check_room(&name, len.max(0) as u64)
                    .await
                    .map_err(s3_err)?;
            }
            Ok(name)
        }
        .await;
        let name = match admitted {
            Ok(name) => name,
            Err(e) => {
                let small = input.content_length.is_some_and(|len| len <= 1 << 20);
                if let Some(body) = body.filter(|_| small) {
                    discard_small(body).await;
                }
                return Err(e);
            }
        };
        let body = match body {
            Some(body) => body,
            None => StreamingBlob::wrap(futures_util::stream::empty::<
                std::result::Result<bytes::Bytes, std::io::Error>,
            >()),
        };
        let spooled = spool(&self.gateway, body).await.map_err(s3_err)?;
        if input
            .content_length
            .is_some_and(|len| len != spooled.size as i64)
        {
            return Err(s3_error!(IncompleteBody));
        }
        check_content_md5(input.content_md5.as_deref(), &spooled.md5)?;
        // A key ending in `/` with no bytes is a folder (what consoles make).
        if input.key.ends_with('/') {
            if spooled.size > 0 {
                return Err(s3_error!(
                    InvalidArgument,
                    "a key ending in / names a folder: it holds no bytes"
                ));
            }
            let folder = name.trim_end_matches('/');
            if !client.folder_exists(folder).await.map_err(s3_err)? {
                client.folder(folder, true).await.map_err(s3_err)?;
            }
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(etag(&crate::hex(&spooled.md5))),
                ..Default::default()
            }));
        }
        let object = Object {
            meta: ObjectMeta {
                content_type: input.content_type,
                user: user_meta(input.metadata),
                etag: None,
            },
            md5: Some(spooled.md5),
        };
        client
            .put_object(
                spooled.file.path(),
                &name,
                object,
                &crate::client::no_progress,
            )
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&crate::hex(&spooled.md5))),
            size: Some(spooled.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let name = object_name(&input.bucket, &input.key)?;
        // A range needs the size first (`bytes=-N`); a whole GET asks once.
        let range = match input.range {
            Some(r) => {
                let size = match client.stat(&name).await {
                    Ok(m) => m.size,
                    Err(e) => return Err(self.object_err(&client, &input.bucket, e).await),
                };
                Some(r.check(size).map_err(|_| s3_error!(InvalidRange))?)
            }
            None => None,
        };
        let (manifest, stream) = match client.read(&name, range.clone()).await {
            Ok(opened) => opened,
            Err(e) => return Err(self.object_err(&client, &input.bucket, e).await),
        };
        let len = range.as_ref().map_or(manifest.size, |r| r.end - r.start);
        let body = StreamingBlob::wrap(stream);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range: range.as_ref().map(|r| {
                format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    manifest.size
                )
            }),
            accept_ranges: Some("bytes".into()),
            content_type: content_type(&manifest),
            e_tag: Some(etag(&manifest.etag())),
            last_modified: Some(timestamp(manifest.stored_at)),
            metadata: metadata_of(&manifest),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let name = object_name(&input.bucket, &input.key)?;
        let manifest = match client.stat(&name).await {
            Ok(m) => m,
            Err(e) => return Err(self.object_err(&client, &input.bucket, e).await),
        };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(manifest.size as i64),
            accept_ranges: Some("bytes".into()),
            content_type: content_type(&manifest),
            e_tag: Some(etag(&manifest.etag())),
            last_modified: Some(timestamp(manifest.stored_at)),
            metadata: metadata_of(&manifest),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let name = object_name(&input.bucket, &input.key)?;
        match delete(&client, &name).await {
            Ok(()) => Ok(S3Response::new(DeleteObjectOutput::default())),
            Err(e) => Err(self.object_err(&client, &input.bucket, e).await),
        }
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        require_bucket(&client, &input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            let result = match object_name(&input.bucket, &object.key) {
                Ok(name) => delete(&client, &name).await.map_err(s3_err),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(object.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copies from access points are not supported"
            ));
        };
        let from = object_name(src_bucket, src_key)?;
        let to = object_name(&input.bucket, &input.key)?;
        require_bucket(&client, &input.bucket).await?;
        let source = match client.stat(&from).await {
            Ok(m) => m,
            Err(e) => return Err(self.object_err(&client, src_bucket, e).await),
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let target_exists = client.stat(&to).await.is_ok();
        // The same owner's data, kept as it is: share it (no byte moves).
        let shared = !replace && !target_exists && from != to;
        let linked = shared && client.relink(&from, &to, true).await.is_ok();
        if !linked {
            if from == to && !replace {
                return Err(s3_error!(
                    InvalidRequest,
                    "copying an object onto itself needs new metadata (x-amz-metadata-directive: REPLACE)"
                ));
            }
            let meta = match replace {
                true => ObjectMeta {
                    content_type: input.content_type,
                    user: user_meta(input.metadata),
                    etag: source.meta.as_ref().and_then(|m| m.etag.clone()),
                },
                false => source.meta.clone().unwrap_or_default(),
            };
            let (_, stream) = client.read(&from, None).await.map_err(s3_err)?;
            let spooled = spool(&self.gateway, stream).await.map_err(s3_err)?;
            let object = Object {
                meta,
                md5: Some(spooled.md5),
            };
            client
                .put_object(
                    spooled.file.path(),
                    &to,
                    object,
                    &crate::client::no_progress,
                )
                .await
                .map_err(s3_err)?;
        }
        let copied = client.stat(&to).await.map_err(s3_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&copied.etag())),
                last_modified: Some(timestamp(copied.stored_at)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let listing = list(
            &client,
            &input.bucket,
            input.prefix.as_deref().unwrap_or(""),
            input.delimiter.as_deref(),
            input.marker.as_deref(),
            input.max_keys,
        )
        .await?;
        let truncated = listing.next.is_some();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            marker: input.marker,
            max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS)),
            is_truncated: Some(truncated),
            next_marker: listing.next,
            contents: Some(listing.contents),
            common_prefixes: Some(listing.prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let (_, client) = self.client(&req).await?;
        let input = req.input;
        let after = input
            .continuation_token
            .as_deref()
            .or(input.start_after.as_deref());
        let listing = list(
            &client,
            &input.bucket,
            input.prefix.as_deref().unwrap_or(""),
            input.delimiter.as_deref(),
            after,
            input.max_keys,
        )
        .await?;
        let count = listing.contents.len() + listing.prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS)),
            key_count: Some(count as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(listing.next.is_some()),
            next_continuation_token: listing.next,
            contents: Some(listing.contents),
            common_prefixes: Some(listing.prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            start_after: input.start_after,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (user, client) = self.client(&req).await?;
        let input = req.input;
        object_name(&input.bucket, &input.key)?;
        require_bucket(&client, &input.bucket).await?;
        sweep_uploads(&self.gateway.uploads_dir());
        let id = crate::hex(&rand::random::<[u8; 16]>());
        let dir = self.upload_dir(&id)?;
        let upload = Upload {
            user,
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            meta: ObjectMeta {
                content_type: input.content_type,
                user: user_meta(input.metadata),
                etag: None,
            },
            initiated: crate::unix_now(),
        };
        let json =
            serde_json::to_vec(&upload).map_err(|e| s3_err(Error::Internal(e.to_string())))?;
        std::fs::create_dir(&dir).map_err(|e| s3_err(Error::io("creating an upload", e)))?;
        crate::atomic::write_file(
            &dir.join("upload.json"),
            &json,
            0o600,
            crate::atomic::Existing::Replace,
        )
        .map_err(s3_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let (user, _) = self.client(&req).await?;
        let input = req.input;
        let (dir, _) = self.upload(&user, &input.bucket, &input.key, &input.upload_id)?;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers are 1 to {MAX_PARTS}"
            ));
        }
        let body = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "a part needs a body"))?;
        let spooled = spool(&self.gateway, body).await.map_err(s3_err)?;
        if input
            .content_length
            .is_some_and(|len| len != spooled.size as i64)
        {
            return Err(s3_error!(IncompleteBody));
        }
        check_content_md5(input.content_md5.as_deref(), &spooled.md5)?;
        let record = PartRecord {
            size: spooled.size,
            md5: spooled.md5,
            stored: crate::unix_now(),
        };
        let part = part_path(&dir, input.part_number);
        // The bytes first, then the record that vouches for them: a part
        // with no record is not listed and not used.
        spooled
            .file
            .persist(&part)
            .map_err(|e| s3_err(Error::io("keeping a part", e.error)))?;
        let json =
            serde_json::to_vec(&record).map_err(|e| s3_err(Error::Internal(e.to_string())))?;
        crate::atomic::write_file(
            &part.with_extension("json"),
            &json,
            0o600,
            crate::atomic::Existing::Replace,
        )
        .map_err(s3_err)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&crate::hex(&spooled.md5))),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let (user, _) = self.client(&req).await?;
        let input = req.input;
        let (dir, _) = self.upload(&user, &input.bucket, &input.key, &input.upload_id)?;
        let after = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(MAX_KEYS).clamp(1, MAX_KEYS) as usize;
        let mut parts: Vec<_> = parts_of(&dir)
            .into_iter()
            .filter(|(n, _)| *n > after)
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|(n, _)| *n);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            owner: Some(owner(&user)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|(n, r)| Part {
                        part_number: Some(n),
                        size: Some(r.size as i64),
                        e_tag: Some(etag(&crate::hex(&r.md5))),
                        last_modified: Some(timestamp(r.stored)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let (user, client) = self.client(&req).await?;
        let input = req.input;
        require_bucket(&client, &input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads = Vec::new();
        if let Ok(dir) = std::fs::read_dir(self.gateway.uploads_dir()) {
            for entry in dir.flatten() {
                let Ok(text) = std::fs::read(entry.path().join("upload.json")) else {
                    continue;
                };
                let Ok(upload) = serde_json::from_slice::<Upload>(&text) else {
                    continue;
                };
                if upload.user == user
                    && upload.bucket == input.bucket
                    && upload.key.starts_with(&prefix)
                {
                    uploads.push(MultipartUpload {
                        key: Some(upload.key),
                        upload_id: Some(entry.file_name().to_string_lossy().into_owned()),
                        initiated: Some(timestamp(upload.initiated)),
                        owner: Some(owner(&user)),
                        initiator: Some(Initiator {
                            display_name: Some(user.clone()),
                            id: Some(user.clone()),
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let (user, _) = self.client(&req).await?;
        let input = req.input;
        let (dir, _) = self.upload(&user, &input.bucket, &input.key, &input.upload_id)?;
        std::fs::remove_dir_all(&dir).map_err(|e| s3_err(Error::io("removing an upload", e)))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (user, client) = self.client(&req).await?;
        let input = req.input;
        let name = object_name(&input.bucket, &input.key)?;
        let (dir, upload) = self.upload(&user, &input.bucket, &input.key, &input.upload_id)?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "the upload names no parts"));
        }
        let stored: BTreeMap<i32, PartRecord> = parts_of(&dir).into_iter().collect();
        let mut numbers = Vec::with_capacity(asked.len());
        for part in &asked {
            let n = part
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "a part has no number"))?;
            if numbers.last().is_some_and(|&previous| n <= previous) {
                return Err(s3_error!(InvalidPartOrder));
            }
            numbers.push(n);
        }
        let mut chosen = Vec::with_capacity(asked.len());
        for (i, (part, &n)) in asked.iter().zip(&numbers).enumerate() {
            let record = stored
                .get(&n)
                .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            let want = crate::hex(&record.md5);
            if part.e_tag.as_ref().is_some_and(|e| e.value() != want) {
                return Err(s3_error!(InvalidPart, "part {n}'s ETag does not match"));
            }
            if i + 1 < asked.len() && record.size < MIN_PART {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {n} is under 5 MiB and not the last"
                ));
            }
            chosen.push((n, record.md5));
        }
        let mut joined_md5 = md5::Md5::new();
        for (_, md5) in &chosen {
            joined_md5.update(md5);
        }
        let multipart_etag = format!("{}-{}", crate::hex(&joined_md5.finalize()), chosen.len());
        // Stored from the parts where they lie: no joined copy on disk.
        let paths: Vec<PathBuf> = chosen.iter().map(|(n, _)| part_path(&dir, *n)).collect();
        let object = Object {
            meta: ObjectMeta {
                etag: Some(multipart_etag.clone()),
                ..upload.meta
            },
            md5: None,
        };
        client
            .put_object_parts(&paths, &name, object, &crate::client::no_progress)
            .await
            .map_err(s3_err)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&multipart_etag)),
            ..Default::default()
        }))
    }
}

/// Refuses a request signed (in its headers) more than [`MAX_SKEW`] from
/// this server's clock, as S3 does: a captured request cannot be replayed
/// later. (A presigned URL carries its own expiry, which s3s checks.)
fn check_clock(headers: &http::HeaderMap) -> S3Result<()> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed_at = if let Some(amz) = text("x-amz-date") {
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        time::PrimitiveDateTime::parse(amz, &format)
            .map_err(|_| s3_error!(AccessDenied, "x-amz-date is not a date"))?
            .assume_utc()
            .unix_timestamp()
    } else if let Some(date) = text("date") {
        let at = httpdate::parse_http_date(date)
            .map_err(|_| s3_error!(AccessDenied, "Date is not a date"))?;
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    } else {
        return Ok(());
    };
    let now = crate::unix_now() as i64;
    if (now - signed_at).abs() > MAX_SKEW.as_secs() as i64 {
        return Err(s3_error!(
            RequestTimeTooSkewed,
            "the request was signed {} s from this server's time (at most {} s allowed)",
            now - signed_at,
            MAX_SKEW.as_secs()
        ));
    }
    Ok(())
}

/// Reads and drops a request body of at most 1 MiB (within 5 s).
async fn discard_small(mut body: StreamingBlob) {
    use futures_util::StreamExt;
    let drained = async {
        let mut seen = 0usize;
        while let Some(Ok(block)) = body.next().await {
            seen += block.len();
            if seen > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
}

/// The remote name of `bucket`/`key`, or S3's refusal of the key.
fn object_name(bucket: &str, key: &str) -> S3Result<String> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "an object key may not be empty"));
    }
    let name = format!("{bucket}/{key}");
    crate::names::validate_name(name.trim_end_matches('/'))
        .map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
    Ok(name)
}

/// NoSuchBucket unless the bucket exists.
async fn require_bucket(client: &Client, bucket: &str) -> S3Result<()> {
    match bucket_exists(client, bucket).await {
        true => Ok(()),
        false => Err(s3_error!(NoSuchBucket)),
    }
}

/// Whether the bucket exists (errors count as no: the request then says
/// NoSuchBucket, or its own error).
async fn bucket_exists(client: &Client, bucket: &str) -> bool {
    if bucket == SHARED {
        return true;
    }
    client.folder_exists(bucket).await.unwrap_or(false)
}

/// Deletes `name`; a key that is not there is no error (S3 answers 204).
async fn delete(client: &Client, name: &str) -> crate::error::Result<()> {
    match client.delete(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. }) || e.kind() == ErrorKind::NotFound
}

/// A page of a listing.
struct Listing {
    contents: Vec<s3s::dto::Object>,
    prefixes: Vec<CommonPrefix>,
    /// The next page's cursor (a key or a common prefix), if there is more.
    next: Option<String>,
}

/// One page of `bucket`'s keys under `prefix`, after `after`, with keys
/// holding `delimiter` past the prefix rolled up into common prefixes.
/// With `/` as the delimiter a page is read one folder level deep; any
/// other delimiter (or none) walks every key under the prefix.
async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: Option<i32>,
) -> S3Result<Listing> {
    require_bucket(client, bucket).await?;
    // An empty marker or token is none (aws sends `Marker=` on a first page).
    let after = after.filter(|a| !a.is_empty());
    // A cursor that is a common prefix resumes past everything it rolled up.
    let rolled_up = |key: &str| {
        after.is_some_and(|a| {
            delimiter.is_some_and(|d| !d.is_empty() && a.ends_with(d)) && key.starts_with(a)
        })
    };
    let max = max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS) as usize;
    let mut listing = Listing {
        contents: Vec::new(),
        prefixes: Vec::new(),
        next: None,
    };
    if max == 0 {
        return Ok(listing);
    }
    let root = format!("{bucket}/");
    let full_prefix = format!("{root}{prefix}");
    // Where to start: after the cursor, or just before the prefix.
    let start = match after {
        Some(a) if format!("{root}{a}") >= full_prefix => Some(format!("{root}{a}")),
        _ => before(&full_prefix, &root),
    };
    let by_folder = delimiter == Some("/");
    // The deepest folder holding every key under the prefix: only it is
    // read (and in `shared`, it names whose files, so their share rules).
    let folder = full_prefix
        .rsplit_once('/')
        .map_or(bucket, |(f, _)| f)
        .to_string();
    let mut cursor = start;
    let mut last_prefix: Option<String> = None;
    'pages: loop {
        let (items, next) = if by_folder {
            client
                .list_dir_page(&folder, cursor.as_deref())
                .await
                .map_err(s3_err)?
        } else {
            let (files, next) = client
                .tree_page(&folder, cursor.as_deref())
                .await
                .map_err(s3_err)?;
            (files.into_iter().map(file_item).collect(), next)
        };
        for item in items {
            let path = match &item {
                DirItem::File(f) => f.name.clone(),
                DirItem::Folder(p) => format!("{p}/"),
            };
            if !path.starts_with(&full_prefix) {
                if path > full_prefix {
                    break 'pages; // past everything the prefix covers
                }
                continue;
            }
            let Some(key) = path.strip_prefix(&root) else {
                continue;
            };
            if after.is_some_and(|a| key <= a) || rolled_up(key) {
                continue;
            }
            if listing.contents.len() + listing.prefixes.len() == max {
                listing.next = last_key(&listing);
                break 'pages;
            }
            // A key holding the delimiter past the prefix is rolled up.
            let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|at| key[..prefix.len() + at + d.len()].to_string())
            });
            match (rolled, item) {
                (Some(common), _) => {
                    if last_prefix.as_deref() != Some(&common) {
                        last_prefix = Some(common.clone());
                        listing.prefixes.push(CommonPrefix {
                            prefix: Some(common),
                        });
                    }
                }
                (None, DirItem::File(f)) => listing.contents.push(s3s::dto::Object {
                    key: Some(key.to_string()),
                    size: Some(f.size as i64),
                    e_tag: Some(etag(&f.etag)),
                    last_modified: Some(timestamp(f.stored_at)),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                // A folder without the delimiter rolling it up cannot
                // happen (only `/` lists by folder); nothing to list.
                (None, DirItem::Folder(_)) => {}
            }
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(listing)
}

/// The cursor just before every name starting with `prefix` (a listing
/// returns names after its cursor), or none at the bucket's top.
fn before(prefix: &str, root: &str) -> Option<String> {
    if prefix == root {
        return None;
    }
    let mut cut = prefix.to_string();
    cut.pop();
    Some(cut)
}

/// The last key or common prefix a page holds: the next page's cursor.
fn last_key(listing: &Listing) -> Option<String> {
    let key = listing.contents.last().and_then(|o| o.key.clone());
    let prefix = listing.prefixes.last().and_then(|p| p.prefix.clone());
    key.max(prefix)
}

fn file_item(m: Manifest) -> DirItem {
    DirItem::File(crate::client::FileInfo {
        etag: m.etag(),
        name: m.name,
        size: m.size,
        chunks: m.chunks,
        stored_at: m.stored_at,
        version: m.version,
        copies: Vec::new(),
        wanted: 0,
    })
}

/// The stored parts of an upload, by number.
fn parts_of(dir: &Path) -> Vec<(i32, PartRecord)> {
    let mut parts = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return parts;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(record) = std::fs::read(entry.path())
            .ok()
            .and_then(|t| serde_json::from_slice::<PartRecord>(&t).ok())
            .ok_or(())
        {
            parts.push((n, record));
        }
    }
    parts.sort_by_key(|(n, _)| *n);
    parts
}

fn part_path(dir: &Path, n: i32) -> PathBuf {
    dir.join(format!("{n:05}"))
}

/// Removes uploads older than [`UPLOAD_GRACE`].
fn sweep_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > UPLOAD_GRACE));
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses a body whose MD5 is not the `Content-MD5` the client sent.
fn check_content_md5(sent: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    use base64::Engine;
    let Some(sent) = sent else {
        return Ok(());
    };
    let sent = base64::engine::general_purpose::STANDARD
        .decode(sent.trim())
        .map_err(|_| s3_error!(InvalidDigest))?;
    if sent.as_slice() != md5 {
        return Err(s3_error!(BadDigest));
    }
    Ok(())
}

/// `x-amz-meta-*`, in a stable order.
fn user_meta(metadata: Option<Metadata>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    pairs.sort();
    pairs
}

fn metadata_of(m: &Manifest) -> Option<Metadata> {
    let meta = m.meta.as_ref()?;
    (!meta.user.is_empty()).then(|| meta.user.iter().cloned().collect())
}

fn content_type(m: &Manifest) -> Option<ContentType> {
    Some(
        m.meta
            .as_ref()
            .and_then(|meta| meta.content_type.clone())
            .unwrap_or_else(|| "binary/octet-stream".into()),
    )
}

fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_string())
}

fn timestamp(secs: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))
}

fn owner(user: &str) -> Owner {
    Owner {
        display_name: Some(user.to_string()),
        id: Some(user.to_string()),
    }
}

/// S3's error for one of ours.
fn s3_err(e: Error) -> S3Error {
    let code = match &e {
        Error::NotFound { .. } => S3ErrorCode::NoSuchKey,
        Error::Unauthorized | Error::NotLoggedIn | Error::Denied(_) => S3ErrorCode::AccessDenied,
        Error::OverQuota(_) => S3ErrorCode::Custom("QuotaExceeded".into()),
        Error::NoSpace => S3ErrorCode::Custom("XRingdfsNoSpace".into()),
        Error::InvalidName { .. } => S3ErrorCode::InvalidArgument,
        Error::RangeNotSatisfiable { .. } => S3ErrorCode::InvalidRange,
        Error::BadRequest(_) => S3ErrorCode::IncompleteBody,
        Error::Refused(_) => S3ErrorCode::InvalidRequest,
        Error::Unavailable { .. } | Error::ChunkUnavailable { .. } | Error::Timeout { .. } => {
            S3ErrorCode::ServiceUnavailable
        }
        Error::Remote { error, .. } => match error.kind {
            ErrorKind::NotFound => S3ErrorCode::NoSuchKey,
            ErrorKind::InvalidName => S3ErrorCode::InvalidArgument,
            ErrorKind::BadRequest => S3ErrorCode::InvalidRequest,
            ErrorKind::Unauthorized | ErrorKind::NotLoggedIn | ErrorKind::Denied => {
                S3ErrorCode::AccessDenied
            }
            _ => S3ErrorCode::InternalError,
        },
        _ => S3ErrorCode::InternalError,
    };
    let mut err = S3Error::with_message(code.clone(), e.to_string());
    match code {
        S3ErrorCode::Custom(_) => err.set_status_code(http::StatusCode::FORBIDDEN),
        S3ErrorCode::InternalError => tracing::warn!(error = %e, "S3 request failed"),
        _ => {}
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_path_under_its_bucket_and_bad_keys_are_invalid_arguments() {
        assert_eq!(
            object_name("photos", "2024/a.jpg").unwrap(),
            "photos/2024/a.jpg"
        );
        assert_eq!(object_name("photos", "dir/").unwrap(), "photos/dir/");
        for bad in ["", "a//b", "../x", "a/./b"] {
            let e = object_name("photos", bad).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn a_listing_starts_just_before_its_prefix() {
        assert_eq!(before("b/", "b/"), None);
        assert_eq!(before("b/ab", "b/").as_deref(), Some("b/a"));
        assert!("b/ab" > "b/a" && "b/abc" > "b/a");
    }

    #[test]
    fn content_md5_is_checked_when_sent() {
        let md5: [u8; 16] = md5::Md5::digest(b"hello").into();
        use base64::Engine;
        let good = base64::engine::general_purpose::STANDARD.encode(md5);
        assert!(check_content_md5(Some(&good), &md5).is_ok());
        assert!(check_content_md5(None, &md5).is_ok());
        let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        assert_eq!(
            *check_content_md5(Some(&wrong), &md5).unwrap_err().code(),
            S3ErrorCode::BadDigest
        );
        assert_eq!(
            *check_content_md5(Some("%%"), &md5).unwrap_err().code(),
            S3ErrorCode::InvalidDigest
        );
    }
}
