#!/usr/bin/env bash
# Proves that the radosgw started by `scripts/ceph-rgw.sh up DIR` enforces S3 Object Lock and
# bucket policies, using nothing but curl's SigV4 signing (curl >= 7.75) and python3's stdlib.
#   scripts/ceph-rgw-selftest.sh DIR
# Prints one line per request (step, expected and actual HTTP status); exits non-zero if any
# enforcement check fails. Creates buckets named hf-selftest-* and a second S3 user
# "holdfast-backup" (radosgw-admin, so it needs DIR/ceph.conf); it deletes nothing it cannot.
# Notes on curl's SigV4 (7.88): it signs the query string verbatim, so every query parameter is
# written as "name=" and the parameters are written in sorted order; and it always sends an
# explicit x-amz-content-sha256 header because radosgw assumes UNSIGNED-PAYLOAD without one.
set -euo pipefail
dir=${1:?usage: ceph-rgw-selftest.sh DIR}
[ -s "$dir/env" ] || { echo "no $dir/env: run scripts/ceph-rgw.sh up $dir first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$dir/env"
conf=${RGW_CONF:-$dir/ceph.conf}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
run=$(date +%s)-$$
fails=0
status=
empty_sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
: >"$T/empty"

# s3 WHO METHOD PATH [BODYFILE] [curl args...]: one signed request; sets $status, leaves the
# response headers in $T/hdr and the body in $T/body. WHO is owner or backup.
s3() {
  local who=$1 method=$2 path=$3 body= sha key secret
  shift 3
  if [ $# -gt 0 ] && [ "${1:0:1}" != - ]; then body=$1; shift; fi
  if [ "$who" = owner ]; then key=$RGW_ACCESS_KEY_ID secret=$RGW_SECRET_ACCESS_KEY
  else key=$BACKUP_KEY secret=$BACKUP_SECRET; fi
  local args=(-sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' --max-time 30
    --aws-sigv4 "aws:amz:$RGW_REGION:s3" --user "$key:$secret")
  case "$method" in
  HEAD) args+=(--head) ;;
  GET) ;;
  PUT | POST)
    body=${body:-$T/empty}
    args+=(-X "$method" --data-binary "@$body" -H "Content-Type: application/octet-stream"
      -H "Content-MD5: $(openssl md5 -binary <"$body" | base64)")
    ;;
  *) args+=(-X "$method") ;;
  esac
  if [ -n "$body" ]; then sha=$(sha256sum <"$body" | cut -d' ' -f1); else sha=$empty_sha; fi
  args+=(-H "x-amz-content-sha256: $sha")
  status=$(curl "${args[@]}" "$@" "$RGW_ENDPOINT$path") || status=000
}
header() { tr -d '\r' <"$T/hdr" | awk -v h="$(echo "$1" | tr A-Z a-z)" -F': ' 'tolower($1)==h {print $2}' | tail -n1; }
error_code() { sed -n 's:.*<Code>\([^<]*\)</Code>.*:\1:p' "$T/body" 2>/dev/null | head -n1; }
# check STEP DESCRIPTION EXPECTED...: compare $status with the expected statuses.
check() {
  local step=$1 what=$2 e ok=
  shift 2
  for e in "$@"; do [ "$status" = "$e" ] && ok=1; done
  local code; code=$(error_code)
  if [ -n "$ok" ]; then
    printf 'PASS  %-4s %-70s %s%s\n' "$step" "$what" "$status" "${code:+ $code}"
  else
    printf 'FAIL  %-4s %-70s %s%s (expected %s)\n' "$step" "$what" "$status" "${code:+ $code}" "$*"
    fails=$((fails + 1))
  fi
}
# note STEP DESCRIPTION: report a status without judging it.
note() {
  local code; code=$(error_code)
  printf 'INFO  %-4s %-70s %s%s\n' "$1" "$2" "$status" "${code:+ $code}"
}
fail() { printf 'FAIL  %-4s %s\n' "$1" "$2"; fails=$((fails + 1)); }
pass() { printf 'PASS  %-4s %s\n' "$1" "$2"; }
iso() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }
lock_xml() { # MODE DAYS
  printf '<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>%s</Mode><Days>%s</Days></DefaultRetention></Rule></ObjectLockConfiguration>' "$1" "$2" >"$T/lock.xml"
}
retention_xml() { # MODE DATE
  printf '<Retention><Mode>%s</Mode><RetainUntilDate>%s</RetainUntilDate></Retention>' "$1" "$2" >"$T/ret.xml"
}
# versions_of KEY: "VERSIONID IS_DELETE_MARKER" lines from the ListObjectVersions body.
versions_of() {
  python3 - "$1" "$T/body" <<'PY'
import sys, xml.etree.ElementTree as ET
key, path = sys.argv[1], sys.argv[2]
root = ET.parse(path).getroot()
for el in root:
    tag = el.tag.split('}')[-1]
    if tag not in ("Version", "DeleteMarker"):
        continue
    f = {c.tag.split('}')[-1]: c.text for c in el}
    if f.get("Key") == key:
        print(f.get("VersionId"), "marker" if tag == "DeleteMarker" else "version")
PY
}

echo "endpoint $RGW_ENDPOINT region $RGW_REGION (path-style, curl --aws-sigv4)"

# ---- COMPLIANCE default retention ------------------------------------------------------------
b=hf-selftest-c-$run
s3 owner PUT "/$b" -H 'x-amz-bucket-object-lock-enabled: true'
check 1 "create bucket $b with object lock" 200
s3 owner GET "/$b?versioning="
note 1 "GET ?versioning -> $(sed -n 's:.*<Status>\([^<]*\)</Status>.*:\1:p' "$T/body")"
lock_xml COMPLIANCE 1
s3 owner PUT "/$b?object-lock=" "$T/lock.xml"
check 2 "PUT ?object-lock default COMPLIANCE 1 day" 200
s3 owner GET "/$b?object-lock="
grep -q '<Mode>COMPLIANCE</Mode>' "$T/body" && check 2 "GET ?object-lock shows COMPLIANCE" 200 ||
  { status="$status (body: $(cat "$T/body"))"; check 2 "GET ?object-lock shows COMPLIANCE" 200; }
printf 'original bytes %s\n' "$run" >"$T/obj"
s3 owner PUT "/$b/obj1" "$T/obj"
check 3 "PUT obj1" 200
v1=$(header x-amz-version-id)
s3 owner HEAD "/$b/obj1"
check 3 "HEAD obj1" 200
mode=$(header x-amz-object-lock-mode) until=$(header x-amz-object-lock-retain-until-date)
echo "      HEAD obj1: version-id=$(header x-amz-version-id) x-amz-object-lock-mode=$mode x-amz-object-lock-retain-until-date=$until"
[ "$mode" = COMPLIANCE ] && [ -n "$until" ] && pass 3 "lock headers present on HEAD" ||
  fail 3 "lock headers missing on HEAD (mode='$mode' until='$until')"
s3 owner DELETE "/$b/obj1"
check 4 "DELETE obj1 without versionId (expect delete marker)" 204 200
echo "      x-amz-delete-marker=$(header x-amz-delete-marker) x-amz-version-id=$(header x-amz-version-id)"
s3 owner GET "/$b/obj1"
check 4 "GET obj1 (latest is delete marker)" 404
s3 owner GET "/$b?versions="
check 5 "GET ?versions" 200
versions_of obj1 | sed 's/^/      /'
vid=$(versions_of obj1 | awk '$2=="version"{print $1; exit}')
marker=$(versions_of obj1 | awk '$2=="marker"{print $1; exit}')
[ -n "$vid" ] && [ "$vid" = "$v1" ] && pass 5 "listed version $vid is the one PUT returned" ||
  fail 5 "version from listing '$vid' != version from PUT '$v1'"
s3 owner DELETE "/$b/obj1?versionId=$vid"
check 5 "DELETE obj1?versionId (COMPLIANCE) must be refused" 403
s3 owner DELETE "/$b/obj1?versionId=$vid" -H 'x-amz-bypass-governance-retention: true'
check 5 "DELETE ?versionId + bypass-governance header (COMPLIANCE) refused" 403
retention_xml COMPLIANCE "$(iso '+1 hour')"
s3 owner PUT "/$b/obj1?retention=&versionId=$vid" "$T/ret.xml"
check 5 "PUT ?retention shorter date (COMPLIANCE) must be refused" 403
retention_xml GOVERNANCE "$(iso '+2 days')"
s3 owner PUT "/$b/obj1?retention=&versionId=$vid" "$T/ret.xml"
check 5 "PUT ?retention COMPLIANCE->GOVERNANCE must be refused" 403
retention_xml COMPLIANCE "$(iso '+3 days')"
s3 owner PUT "/$b/obj1?retention=&versionId=$vid" "$T/ret.xml"
check 5 "PUT ?retention extending the date (allowed by S3)" 200
s3 owner GET "/$b/obj1?retention=&versionId=$vid"
note 5 "GET ?retention -> $(sed -n 's:.*<RetainUntilDate>\([^<]*\)<.*:\1:p' "$T/body")"
s3 owner DELETE "/$b/obj1?versionId=$marker"
check 5 "DELETE the delete marker (allowed: markers are not locked)" 204
s3 owner GET "/$b/obj1?versionId=$vid"
check 6 "GET obj1?versionId" 200
cmp -s "$T/body" "$T/obj" && pass 6 "old version has the original bytes" || fail 6 "old version bytes differ"
s3 owner PUT "/$b/obj1" "$T/obj"
check 6 "PUT obj1 again (new version; the locked one stays)" 200
s3 owner GET "/$b?versions="
echo "      versions of obj1 now: $(versions_of obj1 | wc -l)"

# ---- GOVERNANCE default retention --------------------------------------------------------
g=hf-selftest-g-$run
s3 owner PUT "/$g" -H 'x-amz-bucket-object-lock-enabled: true'
check 2g "create bucket $g with object lock" 200
lock_xml GOVERNANCE 1
s3 owner PUT "/$g?object-lock=" "$T/lock.xml"
check 2g "PUT ?object-lock default GOVERNANCE 1 day" 200
s3 owner PUT "/$g/obj" "$T/obj"
check 3g "PUT obj" 200
gv=$(header x-amz-version-id)
s3 owner HEAD "/$g/obj"
echo "      HEAD obj: x-amz-object-lock-mode=$(header x-amz-object-lock-mode) x-amz-object-lock-retain-until-date=$(header x-amz-object-lock-retain-until-date)"
[ "$(header x-amz-object-lock-mode)" = GOVERNANCE ] && pass 3g "GOVERNANCE lock headers on HEAD" ||
  fail 3g "GOVERNANCE lock headers missing"
s3 owner DELETE "/$g/obj?versionId=$gv"
check 5g "DELETE ?versionId (GOVERNANCE, no bypass) must be refused" 403
retention_xml GOVERNANCE "$(iso '+1 hour')"
s3 owner PUT "/$g/obj?retention=&versionId=$gv" "$T/ret.xml"
check 5g "PUT ?retention shorter (GOVERNANCE, no bypass) must be refused" 403
s3 owner PUT "/$g/obj?retention=&versionId=$gv" "$T/ret.xml" -H 'x-amz-bypass-governance-retention: true'
note 5g "PUT ?retention shorter with bypass header, as owner"
s3 owner DELETE "/$g/obj?versionId=$gv" -H 'x-amz-bypass-governance-retention: true'
note 5g "DELETE ?versionId with bypass header, as owner (AWS: allowed)"

# ---- per-object retention on a bucket without default retention ---------------------------
n=hf-selftest-n-$run
s3 owner PUT "/$n" -H 'x-amz-bucket-object-lock-enabled: true'
check 7 "create bucket $n with object lock, no default retention" 200
s3 owner PUT "/$n/per-put" "$T/obj" -H 'x-amz-object-lock-mode: COMPLIANCE' \
  -H "x-amz-object-lock-retain-until-date: $(iso '+1 day')"
check 7 "PUT per-put with lock-mode/retain-until headers" 200
pv=$(header x-amz-version-id)
s3 owner HEAD "/$n/per-put"
echo "      HEAD per-put: x-amz-object-lock-mode=$(header x-amz-object-lock-mode) x-amz-object-lock-retain-until-date=$(header x-amz-object-lock-retain-until-date)"
[ "$(header x-amz-object-lock-mode)" = COMPLIANCE ] && pass 7 "per-PUT retention recorded" || fail 7 "per-PUT retention not recorded"
s3 owner DELETE "/$n/per-put?versionId=$pv"
check 7 "DELETE per-put?versionId must be refused" 403
s3 owner PUT "/$n/later" "$T/obj"
check 7 "PUT later (no retention)" 200
lv=$(header x-amz-version-id)
s3 owner HEAD "/$n/later"
echo "      HEAD later: x-amz-object-lock-mode='$(header x-amz-object-lock-mode)'"
retention_xml COMPLIANCE "$(iso '+1 day')"
s3 owner PUT "/$n/later?retention=&versionId=$lv" "$T/ret.xml"
check 7 "PUT ?retention on an existing version" 200
s3 owner HEAD "/$n/later?versionId=$lv"
echo "      HEAD later?versionId: x-amz-object-lock-mode=$(header x-amz-object-lock-mode) x-amz-object-lock-retain-until-date=$(header x-amz-object-lock-retain-until-date)"
s3 owner DELETE "/$n/later?versionId=$lv"
check 7 "DELETE later?versionId after PUT ?retention must be refused" 403
s3 owner PUT "/$n/held" "$T/obj" -H 'x-amz-object-lock-legal-hold: ON'
check 7 "PUT held with legal hold ON" 200
hv=$(header x-amz-version-id)
s3 owner DELETE "/$n/held?versionId=$hv"
check 7 "DELETE held?versionId under legal hold must be refused" 403
printf '<LegalHold><Status>OFF</Status></LegalHold>' >"$T/hold.xml"
s3 owner PUT "/$n/held?legal-hold=&versionId=$hv" "$T/hold.xml"
check 7 "PUT ?legal-hold OFF" 200
s3 owner DELETE "/$n/held?versionId=$hv"
check 7 "DELETE held?versionId after hold released" 204
s3 owner PUT "/$n/plain" "$T/obj"
pl=$(header x-amz-version-id)
s3 owner DELETE "/$n/plain?versionId=$pl"
check 7 "DELETE ?versionId of an unlocked version (control)" 204

# ---- bucket policy: a backup user that may write and read but never delete -----------------
backup_uid=holdfast-backup
if ! radosgw-admin -c "$conf" user info --uid="$backup_uid" >"$T/user.json" 2>/dev/null; then
  BACKUP_KEY=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  BACKUP_SECRET=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
  radosgw-admin -c "$conf" user create --uid="$backup_uid" --display-name="$backup_uid" \
    --access-key="$BACKUP_KEY" --secret="$BACKUP_SECRET" >"$T/user.json" 2>"$T/user.err" ||
    { cat "$T/user.err" >&2; fail 8 "radosgw-admin user create $backup_uid"; }
fi
read -r BACKUP_KEY BACKUP_SECRET < <(python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["keys"][0]; print(k["access_key"], k["secret_key"])' "$T/user.json")
p=hf-selftest-p-$run
s3 owner PUT "/$p" -H 'x-amz-bucket-object-lock-enabled: true'
check 8 "create bucket $p (versioned, object lock, owner)" 200
cat >"$T/policy.json" <<JSON
{"Version": "2012-10-17", "Statement": [
 {"Sid": "BackupWriteRead", "Effect": "Allow",
  "Principal": {"AWS": ["arn:aws:iam:::user/$backup_uid"]},
  "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions"],
  "Resource": ["arn:aws:s3:::$p", "arn:aws:s3:::$p/*"]},
 {"Sid": "BackupNeverDeletes", "Effect": "Deny",
  "Principal": {"AWS": ["arn:aws:iam:::user/$backup_uid"]},
  "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:BypassGovernanceRetention", "s3:PutBucketPolicy", "s3:PutBucketObjectLockConfiguration"],
  "Resource": ["arn:aws:s3:::$p", "arn:aws:s3:::$p/*"]}]}
JSON
s3 owner PUT "/$p?policy=" "$T/policy.json"
check 8 "PUT ?policy (allow put/get/list, deny delete for $backup_uid)" 200 204
s3 backup GET "/"
note 8 "backup: list own buckets"
s3 backup PUT "/$p/pack-1" "$T/obj"
check 8 "backup: PUT pack-1" 200
bv=$(header x-amz-version-id)
s3 backup GET "/$p/pack-1"
check 8 "backup: GET pack-1" 200
cmp -s "$T/body" "$T/obj" && pass 8 "backup: GET returns the bytes it PUT" || fail 8 "backup: GET bytes differ"
s3 backup GET "/$p?list-type=2"
check 8 "backup: LIST (ListObjectsV2)" 200
s3 backup DELETE "/$p/pack-1"
check 8 "backup: DELETE pack-1 (no versionId) must be refused" 403
s3 backup DELETE "/$p/pack-1?versionId=$bv"
check 8 "backup: DELETE pack-1?versionId must be refused" 403
printf '<Delete><Object><Key>pack-1</Key></Object></Delete>' >"$T/del.xml"
s3 backup POST "/$p?delete=" "$T/del.xml"
if [ "$status" = 200 ] && grep -q '<Deleted>' "$T/body"; then
  fail 8 "backup: multi-object DELETE (POST ?delete) deleted pack-1: $(cat "$T/body")"
else
  note 8 "backup: POST ?delete (multi-object) -> $(sed -n 's:.*<Error>.*<Code>\([^<]*\)</Code>.*:\1:p' "$T/body")"
fi
s3 backup GET "/$p/pack-1?versionId=$bv"
check 8 "pack-1 still there after the backup user's deletes" 200
s3 owner HEAD "/$p/pack-1"
note 8 "owner: HEAD pack-1 (object ACL belongs to the backup user)"
s3 backup PUT "/$p/pack-2" "$T/obj" -H 'x-amz-acl: bucket-owner-full-control'
check 8 "backup: PUT pack-2 with x-amz-acl: bucket-owner-full-control" 200
s3 owner GET "/$p/pack-2"
check 8 "owner: GET pack-2 (granted by bucket-owner-full-control)" 200
s3 backup PUT "/$p?policy=" "$T/policy.json"
check 8 "backup: PUT ?policy must be refused" 403
s3 backup GET "/hf-selftest-c-$run/obj1"
check 8 "backup: GET in a bucket the policy does not cover must be refused" 403
s3 owner DELETE "/$p/pack-1"
check 8 "owner: DELETE pack-1 (policy names only the backup user)" 204

# The same with no Deny statement: a grant that simply leaves delete out is enough.
q=hf-selftest-q-$run
s3 owner PUT "/$q"
check 8b "create bucket $q (plain, unversioned, owner)" 200
python3 - "$T/policy.json" "$p" "$q" >"$T/policy-allow.json" <<'PY'
import json, sys
pol = json.load(open(sys.argv[1]))
pol["Statement"] = [st for st in pol["Statement"] if st["Effect"] == "Allow"]
print(json.dumps(pol).replace(sys.argv[2], sys.argv[3]))
PY
s3 owner PUT "/$q?policy=" "$T/policy-allow.json"
check 8b "PUT ?policy (allow put/get/list only, no Deny statement)" 200 204
s3 backup PUT "/$q/pack-1" "$T/obj"
check 8b "backup: PUT pack-1" 200
s3 backup GET "/$q/pack-1"
check 8b "backup: GET pack-1" 200
s3 backup GET "/$q?list-type=2"
check 8b "backup: LIST" 200
s3 backup DELETE "/$q/pack-1"
check 8b "backup: DELETE pack-1 must be refused (never granted)" 403
s3 backup GET "/$q/pack-1"
check 8b "pack-1 still there" 200
printf 'overwritten\n' >"$T/other"
s3 backup PUT "/$q/pack-1" "$T/other"
note 8b "backup: PUT over pack-1 in an UNVERSIONED bucket (s3:PutObject can overwrite)"
s3 backup GET "/$p/pack-1?versionId=$bv"
s3 backup PUT "/$p/pack-1" "$T/other"
s3 backup GET "/$p/pack-1?versionId=$bv"
check 8b "versioned+locked bucket: old version intact after an overwrite" 200
cmp -s "$T/body" "$T/obj" || fail 8b "old version bytes changed after overwrite"

echo
if [ "$fails" -eq 0 ]; then echo "selftest: all enforcement checks passed"; else echo "selftest: $fails check(s) FAILED"; fi
[ "$fails" -eq 0 ]
