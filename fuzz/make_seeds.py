#!/usr/bin/env python3
"""Write seed corpora for the fuzz targets into fuzz/corpus/<target>/ (stdlib only).

Each seed is a small, valid (or nearly valid) instance of the format the target parses, built
from the format descriptions in crates/holdfast-core/src. Run from anywhere:
    python3 fuzz/make_seeds.py
"""
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, (dict, list)):
        data = json.dumps(data).encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ident(i):
    return hashlib.sha256(bytes([i])).digest()


def hexid(i):
    return ident(i).hex()


# pack_header: blobs_end u64 LE, then "HFP1" count:u32 (type:u8 id:[32] length:u32 raw_len:u32)*
def pack_header(entries):
    h = b"HFP1" + struct.pack("<I", len(entries))
    for t, i, length, raw in entries:
        h += bytes([t]) + ident(i) + struct.pack("<II", length, raw)
    return h


for n, entries in enumerate([[], [(0, 1, 100, 90)], [(0, 1, 10, 5), (1, 2, 20, 40), (0, 3, 0, 0)]]):
    h = pack_header(entries)
    total = sum(e[2] for e in entries)
    put("pack_header", f"header{n}", struct.pack("<Q", total) + h)
    put("pack_header", f"header{n}_slack", struct.pack("<Q", total + 1000) + h)
put("pack_header", "trailer", struct.pack("<Q", 1 << 20) + struct.pack("<I", 1000))


# index_file: "HFI1" npacks (pack_id nblobs (type id offset length raw_len)*)* nsuper id*
def index_file(packs, superseded):
    out = b"HFI1" + struct.pack("<I", len(packs))
    for p, entries in packs:
        out += ident(p) + struct.pack("<I", len(entries))
        for t, i, off, length, raw in entries:
            out += bytes([t]) + ident(i) + struct.pack("<III", off, length, raw)
    out += struct.pack("<I", len(superseded))
    for s in superseded:
        out += ident(s)
    return out


put("index_file", "empty", index_file([], []))
put("index_file", "one", index_file([(1, [(0, 2, 0, 50, 40)])], []))
put("index_file", "two", index_file([(1, [(0, 2, 0, 50, 40), (1, 3, 50, 70, 60)]), (4, [])], [5, 6]))


# tree: JSON, entries sorted by name bytes
def node(name, kind="file", **extra):
    n = {"name": name, "type": kind, "mode": 0o644, "uid": 1000, "gid": 1000,
         "mtime": 1_700_000_000_000_000_000, "ctime": 1_700_000_000_000_000_000,
         "inode": 42, "dev": 2049, "links": 1}
    n.update(extra)
    return n


put("tree", "empty", {"nodes": []})
put("tree", "mixed", {"nodes": [
    node("a.txt", size=5, content=[hexid(1)]),
    node("dir", "dir", subtree=hexid(2)),
    node("link", "symlink", target="a.txt"),
    node("sda", "blockdev", rdev=2048),
    node("x", xattrs=[{"name": "user.k", "value": "6869"}]),
]})
put("tree", "hexname", {"nodes": [node({"hex": "61ff"}), node({"hex": "62"}, "fifo")]})

# key_slot: plaintext JSON with cheap Argon2 parameters (wrapped = nonce 24 + secret 64 + tag 16)
slot = {"kdf": "argon2id", "params": {"m_cost": 8, "t_cost": 1, "p_cost": 1},
        "salt": "00112233445566778899aabbccddeeff", "wrapped": "ab" * 104,
        "created": "2026-11-25T18:00:00+00:00", "host": "h", "user": "u"}
put("key_slot", "slot", slot)
put("key_slot", "slot_p2", dict(slot, params={"m_cost": 16, "t_cost": 2, "p_cost": 2}))
put("key_slot", "slot_badsalt", dict(slot, salt="00"))

# snapshot
snap = {"time": "2026-11-25T18:00:00Z", "tree": hexid(1), "paths": ["/home/u"],
        "hostname": "h", "username": "u", "tags": ["daily"], "parent": hexid(2),
        "complete": True, "errors": [], "warnings": ["/x changed while read"],
        "summary": {"files_new": 1, "files_changed": 2, "files_unmodified": 3, "dirs": 4,
                    "others": 5, "total_bytes": 6, "bytes_read": 7, "blobs_added": 8,
                    "bytes_added": 9, "seconds": 1.25},
        "program": "holdfast 0.1.0"}
put("snapshot", "full", snap)
put("snapshot", "minimal", {k: v for k, v in snap.items() if k not in ("tags", "parent", "errors", "warnings")})
put("snapshot", "offset", dict(snap, time="9999-12-31T23:00:00-05:00"))


# blob: raw_len u32 LE, framing byte (0 raw, 1 zstd), payload
def zstd_frame(blocks, content_size):
    # magic, frame header descriptor: single segment, 1-byte (or 2-byte) content size
    if content_size < 256:
        fh = bytes([0x20, content_size])
    else:
        fh = bytes([0x60]) + struct.pack("<H", content_size - 256)
    out = b"\x28\xb5\x2f\xfd" + fh
    for i, (btype, size, body) in enumerate(blocks):
        last = 1 if i == len(blocks) - 1 else 0
        hdr = (size << 3) | (btype << 1) | last
        out += struct.pack("<I", hdr)[:3] + body
    return out


put("blob", "raw", struct.pack("<I", 5) + b"\x00hello")
put("blob", "raw_empty", struct.pack("<I", 0) + b"\x00")
put("blob", "zstd_raw_block", struct.pack("<I", 5) + b"\x01" + zstd_frame([(0, 5, b"hello")], 5))
put("blob", "zstd_rle_block", struct.pack("<I", 1000) + b"\x01" + zstd_frame([(1, 1000, b"a")], 1000))
put("blob", "zstd_two_blocks", struct.pack("<I", 8) + b"\x01" + zstd_frame([(0, 3, b"abc"), (1, 5, b"z")], 8))

# repo_config
cfg = {"format": "holdfast", "version": 1, "id": hexid(9), "created": "2026-11-25T18:00:00+00:00",
       "chunker": {"min": 524288, "avg": 1048576, "max": 8388608}, "compression": 3,
       "pack_size": 16777216, "cipher": "xchacha20-poly1305"}
put("repo_config", "default", cfg)
put("repo_config", "small_chunks", dict(cfg, chunker={"min": 1024, "avg": 4096, "max": 16384}, compression=0))
put("repo_config", "newer", dict(cfg, version=2))

# session: SessionRecord and GcPlan
put("session", "record", {"operation": "backup", "hostname": "h", "pid": 1234,
                           "started": "2026-11-25T18:00:00Z", "heartbeat": "2026-11-25T18:01:00Z"})
put("session", "plan", {"created": "2026-11-25T18:00:00Z", "condemned": [hexid(1), hexid(2)]})

print("seeds written to", CORPUS)
