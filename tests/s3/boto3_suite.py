"""S3 operations through boto3 against a real ringdfs cluster.

Run by tests/s3.rs, which starts the cluster and passes (environment):
S3_ENDPOINTS (comma-separated https URLs, one per server), S3_CA (the
cluster's ca.pem), ALICE_KEY/ALICE_SECRET, BOB_KEY/BOB_SECRET, WORK (a
scratch folder). Prints one line per check; exits 1 at the first failure.
"""

import hashlib
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINTS = os.environ["S3_ENDPOINTS"].split(",")
CA = os.environ["S3_CA"]
WORK = os.environ["WORK"]
MIB = 1 << 20


def client(key, secret, endpoint=ENDPOINTS[0]):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=CA,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


alice = client(os.environ["ALICE_KEY"], os.environ["ALICE_SECRET"])
alice2 = client(os.environ["ALICE_KEY"], os.environ["ALICE_SECRET"], ENDPOINTS[2])
bob = client(os.environ["BOB_KEY"], os.environ["BOB_SECRET"], ENDPOINTS[1])
checks = 0


def check(what, ok, detail=None):
    global checks
    checks += 1
    if not ok:
        print(f"FAILED: {what} {detail if detail is not None else f'(code: {last_code})'}")
        sys.exit(1)
    print(f"ok: {what}")


last_code = None


def code_of(call):
    global last_code
    try:
        call()
        last_code = None
    except ClientError as e:
        last_code = e.response["Error"]["Code"]
    return last_code


def md5(data):
    return hashlib.md5(data).hexdigest()


# Buckets.
check("no buckets at first", alice.list_buckets()["Buckets"] == [])
alice.create_bucket(Bucket="photos")
check("a second create is BucketAlreadyOwnedByYou",
      code_of(lambda: alice.create_bucket(Bucket="photos")) == "BucketAlreadyOwnedByYou")
alice.head_bucket(Bucket="photos")
check("the bucket is listed", [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["photos"])
check("a missing bucket is 404 on HEAD",
      code_of(lambda: alice.head_bucket(Bucket="nothing-here")) in ("404", "NoSuchBucket"))
check("an invalid bucket name is InvalidBucketName",
      code_of(lambda: alice.create_bucket(Bucket="Bad_Bucket")) == "InvalidBucketName")

# A small object with metadata.
small = os.urandom(1000) + b"end"
put = alice.put_object(Bucket="photos", Key="2024/a.jpg", Body=small,
                       ContentType="image/jpeg", Metadata={"camera": "x100", "Place": "Oslo"})
check("PUT's ETag is the MD5", put["ETag"].strip('"') == md5(small), put["ETag"])
head = alice2.head_object(Bucket="photos", Key="2024/a.jpg")
check("HEAD through another server", head["ContentLength"] == len(small))
check("content type kept", head["ContentType"] == "image/jpeg", head["ContentType"])
check("metadata kept", head["Metadata"] == {"camera": "x100", "place": "Oslo"}, head["Metadata"])
got = alice2.get_object(Bucket="photos", Key="2024/a.jpg")
check("GET is byte-exact", got["Body"].read() == small)
check("GET's ETag is the MD5", got["ETag"].strip('"') == md5(small))
check("Content-MD5 that does not match is BadDigest",
      code_of(lambda: alice.put_object(Bucket="photos", Key="bad", Body=b"abc",
                                       ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")) == "BadDigest")
check("a key the servers refuse is InvalidArgument",
      code_of(lambda: alice.put_object(Bucket="photos", Key="a//b", Body=b"x")) == "InvalidArgument")
check("a PUT into a missing bucket is NoSuchBucket",
      code_of(lambda: alice.put_object(Bucket="nobucket", Key="x", Body=b"x")) == "NoSuchBucket")
check("a missing key is NoSuchKey",
      code_of(lambda: alice.get_object(Bucket="photos", Key="nope")) == "NoSuchKey")
check("a key in a missing bucket is NoSuchBucket",
      code_of(lambda: alice.get_object(Bucket="nobucket", Key="nope")) == "NoSuchBucket")

# 100 MiB through multipart (8 MiB parts), and ranged GETs across chunks.
big_path = os.path.join(WORK, "big.bin")
with open(big_path, "wb") as f:
    f.write(os.urandom(100 * MIB + 12345))
big = open(big_path, "rb").read()
transfer = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)
alice.upload_file(big_path, "photos", "big.bin", Config=transfer)
head = alice.head_object(Bucket="photos", Key="big.bin")
check("the multipart object has its size", head["ContentLength"] == len(big))
check("the multipart ETag is MD5-of-parts-N", head["ETag"].strip('"').endswith("-13"), head["ETag"])
back = os.path.join(WORK, "big.back")
alice2.download_file("photos", "big.bin", back, Config=transfer)
check("the 100 MiB object reads back byte-exact", open(back, "rb").read() == big)
quarter = len(big) // 4
for start, end in [(0, 0), (quarter - 100, quarter + 100), (1000, 3 * quarter + 5),
                   (len(big) - 10, len(big) - 1)]:
    got = alice2.get_object(Bucket="photos", Key="big.bin", Range=f"bytes={start}-{end}")
    data = got["Body"].read()
    check(f"range {start}-{end} is exact", data == big[start:end + 1] and
          got["ContentRange"] == f"bytes {start}-{end}/{len(big)}", got.get("ContentRange"))
got = alice.get_object(Bucket="photos", Key="big.bin", Range="bytes=-7")
check("a suffix range is exact", got["Body"].read() == big[-7:])
check("a range past the end is InvalidRange",
      code_of(lambda: alice.get_object(Bucket="photos", Key="big.bin",
                                       Range=f"bytes={len(big) + 5}-")) == "InvalidRange")

# Buckets named like the files API's paths are S3's when signed.
for name in ["files", "login", "health"]:
    alice.create_bucket(Bucket=name)
    alice.put_object(Bucket=name, Key="k", Body=name.encode())
    check(f"a bucket named {name} is a bucket",
          alice.get_object(Bucket=name, Key="k")["Body"].read() == name.encode() and
          [o["Key"] for o in alice.list_objects_v2(Bucket=name)["Contents"]] == ["k"])
    alice.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "k"}]})
    alice.delete_bucket(Bucket=name)

# Multipart by hand: list parts, abort, complete with a wrong ETag.
up = alice.create_multipart_upload(Bucket="photos", Key="parts.bin", ContentType="text/plain")
uid = up["UploadId"]
p1 = alice.upload_part(Bucket="photos", Key="parts.bin", UploadId=uid, PartNumber=1, Body=b"a" * (5 * MIB))
p2 = alice.upload_part(Bucket="photos", Key="parts.bin", UploadId=uid, PartNumber=2, Body=b"tail")
parts = alice.list_parts(Bucket="photos", Key="parts.bin", UploadId=uid)["Parts"]
check("list parts", [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MIB), (2, 4)])
uploads = alice.list_multipart_uploads(Bucket="photos").get("Uploads", [])
check("list uploads", [u["UploadId"] for u in uploads] == [uid])
check("bob cannot see alice's upload",
      code_of(lambda: bob.list_parts(Bucket="photos", Key="parts.bin", UploadId=uid)) in
      ("NoSuchUpload", "NoSuchBucket"))
check("a wrong part ETag is InvalidPart",
      code_of(lambda: alice.complete_multipart_upload(
          Bucket="photos", Key="parts.bin", UploadId=uid,
          MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p2["ETag"]},
                                     {"PartNumber": 2, "ETag": p2["ETag"]}]})) == "InvalidPart")
check("parts out of order are InvalidPartOrder",
      code_of(lambda: alice.complete_multipart_upload(
          Bucket="photos", Key="parts.bin", UploadId=uid,
          MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": p2["ETag"]},
                                     {"PartNumber": 1, "ETag": p1["ETag"]}]})) == "InvalidPartOrder")
done = alice.complete_multipart_upload(
    Bucket="photos", Key="parts.bin", UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                               {"PartNumber": 2, "ETag": p2["ETag"]}]})
check("the completed upload reads back",
      alice.get_object(Bucket="photos", Key="parts.bin")["Body"].read() == b"a" * (5 * MIB) + b"tail")
up = alice.create_multipart_upload(Bucket="photos", Key="dropped.bin")
alice.upload_part(Bucket="photos", Key="dropped.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
alice.abort_multipart_upload(Bucket="photos", Key="dropped.bin", UploadId=up["UploadId"])
check("an aborted upload is gone",
      code_of(lambda: alice.list_parts(Bucket="photos", Key="dropped.bin",
                                       UploadId=up["UploadId"])) == "NoSuchUpload")
check("an aborted upload stored nothing",
      code_of(lambda: alice.head_object(Bucket="photos", Key="dropped.bin")) in ("404", "NoSuchKey"))

# Listings: prefix, delimiter, pagination (v2 and v1).
alice.create_bucket(Bucket="list")
keys = ["a/1", "a/2", "a/3", "a/b/4", "b/x", "c", "ca", "d/e/f"]
for k in keys:
    alice.put_object(Bucket="list", Key=k, Body=k.encode())
all_v2 = alice.list_objects_v2(Bucket="list")
check("v2 lists every key in order", [o["Key"] for o in all_v2["Contents"]] == sorted(keys))
check("listed ETags are the MD5s", all(o["ETag"].strip('"') == md5(o["Key"].encode()) for o in all_v2["Contents"]))
top = alice.list_objects_v2(Bucket="list", Delimiter="/")
check("delimiter: common prefixes", [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"], top.get("CommonPrefixes"))
check("delimiter: top-level keys", [o["Key"] for o in top["Contents"]] == ["c", "ca"])
sub = alice.list_objects_v2(Bucket="list", Prefix="a/", Delimiter="/")
check("prefix + delimiter", [o["Key"] for o in sub["Contents"]] == ["a/1", "a/2", "a/3"] and
      [p["Prefix"] for p in sub["CommonPrefixes"]] == ["a/b/"])
part = alice.list_objects_v2(Bucket="list", Prefix="c")
check("a prefix that is not a folder", [o["Key"] for o in part["Contents"]] == ["c", "ca"])
seen, token = [], None
while True:
    kw = {"Bucket": "list", "MaxKeys": 3}
    if token:
        kw["ContinuationToken"] = token
    page = alice.list_objects_v2(**kw)
    seen += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check("v2 pages of 3 cover every key once", seen == sorted(keys), seen)
seen, marker = [], ""
while True:
    page = alice.list_objects(Bucket="list", MaxKeys=2, Marker=marker, Delimiter="/")
    seen += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    if not page["IsTruncated"]:
        break
    marker = page["NextMarker"]
check("v1 pages with a marker", sorted(seen) == ["a/", "b/", "c", "ca", "d/"], seen)
paginator = alice.get_paginator("list_objects_v2")
listed = [o["Key"] for p in paginator.paginate(Bucket="list", PaginationConfig={"PageSize": 2}) for o in p.get("Contents", [])]
check("the paginator", listed == sorted(keys))

# Copy: shared data, new metadata, across buckets.
alice.copy_object(Bucket="list", Key="copy-of-a", CopySource={"Bucket": "photos", "Key": "2024/a.jpg"})
got = alice.get_object(Bucket="list", Key="copy-of-a")
check("a copy has the bytes and metadata", got["Body"].read() == small and got["Metadata"]["camera"] == "x100")
alice.copy_object(Bucket="list", Key="copy-of-a", CopySource={"Bucket": "photos", "Key": "2024/a.jpg"},
                  MetadataDirective="REPLACE", Metadata={"new": "yes"}, ContentType="text/plain")
head = alice.head_object(Bucket="list", Key="copy-of-a")
check("a copy with REPLACE has the new metadata", head["Metadata"] == {"new": "yes"} and head["ContentType"] == "text/plain")
check("a copy of a missing key is NoSuchKey",
      code_of(lambda: alice.copy_object(Bucket="list", Key="x", CopySource={"Bucket": "photos", "Key": "nope"})) == "NoSuchKey")

# Delete: one, many, a bucket.
check("deleting a non-empty bucket is BucketNotEmpty",
      code_of(lambda: alice.delete_bucket(Bucket="list")) == "BucketNotEmpty")
res = alice.delete_objects(Bucket="list", Delete={"Objects": [{"Key": k} for k in keys + ["copy-of-a", "never-was"]]})
check("delete_objects deletes each", sorted(d["Key"] for d in res["Deleted"]) == sorted(keys + ["copy-of-a", "never-was"]), res)
check("the bucket is empty", alice.list_objects_v2(Bucket="list").get("KeyCount") == 0)
alice.delete_object(Bucket="photos", Key="parts.bin")
check("a deleted key is NoSuchKey", code_of(lambda: alice.get_object(Bucket="photos", Key="parts.bin")) == "NoSuchKey")
alice.delete_object(Bucket="photos", Key="never-was")
alice.delete_bucket(Bucket="list")
check("the deleted bucket is gone", code_of(lambda: alice.head_bucket(Bucket="list")) in ("404", "NoSuchBucket"))

# Presigned URLs.
ctx = ssl.create_default_context(cafile=CA)
url = alice.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "2024/a.jpg"}, ExpiresIn=60)
check("a presigned GET", urllib.request.urlopen(url, context=ctx).read() == small)
url = alice.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "2024/a.jpg"}, ExpiresIn=1)
time.sleep(2.5)
try:
    urllib.request.urlopen(url, context=ctx)
    check("an expired presigned URL is refused", False)
except urllib.error.HTTPError as e:
    body = e.read().decode()
    check("an expired presigned URL is refused (AccessDenied)", e.code == 403 and "AccessDenied" in body, body)

# Unsigned, badly signed, unknown keys.
try:
    urllib.request.urlopen(f"{ENDPOINTS[0]}/photos/2024/a.jpg", context=ctx)
    check("an unsigned GET is refused", False)
except urllib.error.HTTPError as e:
    check("an unsigned GET is refused", e.code == 403, e.code)
wrong = client(os.environ["ALICE_KEY"], "x" * 40)
check("a wrong secret is SignatureDoesNotMatch",
      code_of(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch")
stranger = client("RDNOSUCHKEY000000000", "x" * 40)
check("an unknown key is InvalidAccessKeyId", code_of(lambda: stranger.list_buckets()) == "InvalidAccessKeyId")

# A signed request replayed outside the clock skew S3 allows (15 minutes).
import datetime
from unittest import mock
import botocore.auth
import botocore.credentials
from botocore.awsrequest import AWSRequest


def signed_get(when, url):
    req = AWSRequest(method="GET", url=url,
                     headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    creds = botocore.credentials.Credentials(os.environ["ALICE_KEY"], os.environ["ALICE_SECRET"])
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers.items())),
                                    context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


now = botocore.auth.get_current_datetime()
status, body = signed_get(now, f"{ENDPOINTS[0]}/photos/2024/a.jpg")
check("a request signed by hand now is served", status == 200 and body == small, status)
status, body = signed_get(now - datetime.timedelta(hours=1), f"{ENDPOINTS[0]}/photos/2024/a.jpg")
check("a request signed an hour ago is RequestTimeTooSkewed",
      status == 403 and b"RequestTimeTooSkewed" in body, (status, body[:200]))

# Isolation: bob sees none of alice's, until she shares.
check("bob has no buckets", bob.list_buckets()["Buckets"] == [])
check("bob's 'photos' is not alice's", code_of(lambda: bob.get_object(Bucket="photos", Key="2024/a.jpg")) == "NoSuchBucket")
check("bob cannot read alice's unshared file",
      code_of(lambda: bob.get_object(Bucket="shared", Key="alice/photos/2024/a.jpg")) == "AccessDenied")
check("bob cannot write into alice's files",
      code_of(lambda: bob.put_object(Bucket="shared", Key="alice/photos/evil", Body=b"x")) == "AccessDenied")
check("bob cannot delete alice's file",
      code_of(lambda: bob.delete_object(Bucket="shared", Key="alice/photos/2024/a.jpg")) == "AccessDenied")
check("bob cannot list alice's folder",
      code_of(lambda: bob.list_objects_v2(Bucket="shared", Prefix="alice/photos/")) == "AccessDenied")
with open(os.path.join(WORK, "share-photos"), "w") as f:
    f.write("ready\n")
# tests/s3.rs shares photos with bob (read) and writes share-done.
deadline = time.time() + 60
while not os.path.exists(os.path.join(WORK, "share-done")) and time.time() < deadline:
    time.sleep(0.1)
got = bob.get_object(Bucket="shared", Key="alice/photos/2024/a.jpg")
check("bob reads what alice shares", got["Body"].read() == small)
listed = [o["Key"] for o in bob.list_objects_v2(Bucket="shared", Prefix="alice/photos/2024/")["Contents"]]
check("bob lists what alice shares", listed == ["alice/photos/2024/a.jpg"], listed)
check("a read-only share refuses bob's PUT",
      code_of(lambda: bob.put_object(Bucket="shared", Key="alice/photos/evil", Body=b"x")) == "AccessDenied")
check("alice's file is unchanged", alice.get_object(Bucket="photos", Key="2024/a.jpg")["Body"].read() == small)
print(f"all {checks} checks passed")
