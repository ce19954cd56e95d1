//! Volumes (block devices, disk image files) as one file of a snapshot. Only the extents the
//! file says are allocated are read (`lseek` `SEEK_DATA`/`SEEK_HOLE`); each hole is stored as
//! runs of all-zero chunks whose ids are computed once per length, so a mostly empty image
//! costs (in time and space) its used bytes. Data extents are chunked with the repository's
//! content-defined chunker, so an incremental run of a changed volume adds only the changed
//! chunks. A restore writes the chunks in order, seeking over zero blocks in an image file
//! (holes stay holes) and writing zeros on a device.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::stream::Piece;
use crate::writer::Dedup;

/// A run of a volume: allocated data, or a hole that reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset in bytes.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Allocated (read it) or a hole (zeros, not read).
    pub data: bool,
}

/// The size of a volume: a block device's through `lseek(SEEK_END)`, a file's length.
pub fn size(f: &File) -> io::Result<u64> {
    let m = f.metadata()?;
    if m.file_type().is_block_device() {
        let mut g = f;
        let n = g.seek(SeekFrom::End(0))?;
        g.seek(SeekFrom::Start(0))?;
        Ok(n)
    } else {
        Ok(m.len())
    }
}

fn seek(f: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor has no memory-safety preconditions.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// The data extents and holes of the first `size` bytes of `f`, in order, covering all of it.
/// Where the file or device does not say (`SEEK_DATA` unsupported), all of it is data. Holes
/// shorter than `min_hole` are read as data (reading a few zeros is cheaper than a cut).
pub fn extents(f: &File, size: u64, min_hole: u64) -> io::Result<Vec<Extent>> {
    let mut raw = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(f, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d.min(size),
            Ok(None) => size,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == 0 => {
                raw = vec![(0, size)];
                break;
            }
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = match seek(f, data, libc::SEEK_HOLE)? {
            Some(h) => h.min(size),
            None => size,
        };
        raw.push((data, hole.max(data + 1).min(size)));
        pos = hole.max(data + 1);
    }
    Ok(fill(raw, size, min_hole))
}

/// The extents of a volume of `size` bytes whose allocated byte ranges `[start, end)` are known
/// from elsewhere (a thin pool's mappings, see `holdfast-policy`'s thin volumes): those ranges
/// are data, the rest holes, as [`extents`] makes them. The ranges must be in order, not
/// overlapping and inside the volume; anything else is refused (`InvalidInput`), never
/// guessed at.
pub fn extents_of(data: &[(u64, u64)], size: u64, min_hole: u64) -> io::Result<Vec<Extent>> {
    let mut at = 0u64;
    for &(s, e) in data {
        if s < at || e <= s || e > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "allocated range {s}..{e} of a {size}-byte volume is empty, out of order, overlapping or past its end"
                ),
            ));
        }
        at = e;
    }
    Ok(fill(data.to_vec(), size, min_hole))
}

/// Data runs in order, separated by holes shorter than `min_hole` merged, then the gaps filled
/// with holes, covering `[0, size)`.
fn fill(raw: Vec<(u64, u64)>, size: u64, min_hole: u64) -> Vec<Extent> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in raw {
        match merged.last_mut() {
            Some(last) if s.saturating_sub(last.1) < min_hole => last.1 = e.max(last.1),
            _ => merged.push((s, e)),
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in merged {
        if s > at {
            out.push(Extent {
                start: at,
                len: s - at,
                data: false,
            });
        }
        out.push(Extent {
            start: s,
            len: e - s,
            data: true,
        });
        at = e;
    }
    if at < size {
        out.push(Extent {
            start: at,
            len: size - at,
            data: false,
        });
    }
    out
}

/// Reads `[start, end)` of a file with `pread`, so several extents share one descriptor.
struct Range<'a> {
    f: &'a File,
    at: u64,
    end: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.at).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let r = self.f.read_at(&mut buf[..n], self.at)?;
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the volume ended at {} bytes while it was read", self.at),
            ));
        }
        self.at += r as u64;
        Ok(r)
    }
}

/// Zero chunks of a hole, as pieces whose ids are known: full `max`-sized chunks, then the
/// remainder in power-of-two pieces (so few distinct lengths are ever hashed).
fn zero_pieces(
    dedup: &Dedup,
    c: &mut Compressor,
    cache: &mut HashMap<u64, Id>,
    mut len: u64,
    max: u64,
) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    while len > 0 {
        let n = if len >= max {
            max
        } else if len >= 4096 {
            1u64 << (63 - len.leading_zeros())
        } else {
            len
        };
        let id = match cache.get(&n) {
            Some(id) => *id,
            None => {
                let id = dedup.store(c, BlobType::Data, &vec![0u8; n as usize])?;
                cache.insert(n, id);
                id
            }
        };
        out.push(Piece::Known(id, n));
        len -= n;
    }
    Ok(out)
}

/// Everything a volume is stored as: the pieces in order (data chunks to store, known zero
/// chunks), built lazily so only one extent's chunker is open at a time.
pub(crate) fn pieces<'a>(
    dedup: &'a Dedup<'a>,
    level: i32,
    f: &'a File,
    extents: Vec<Extent>,
    (min, avg, max): (u32, u32, u32),
    seed: u64,
) -> impl Iterator<Item = Result<Piece>> + 'a {
    let mut cache = HashMap::new();
    let mut c = Compressor::new(level);
    extents
        .into_iter()
        .flat_map(move |e| -> Box<dyn Iterator<Item = Result<Piece>> + 'a> {
            if e.data {
                let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
                    Range {
                        f,
                        at: e.start,
                        end: e.start + e.len,
                    },
                    min,
                    avg,
                    max,
                    fastcdc::v2020::Normalization::Level1,
                    seed,
                );
                Box::new(cdc.map(|r| {
                    r.map(Piece::Data)
                        .map_err(|e| Error::Refused(format!("reading the volume: {e}")))
                }))
            } else {
                match zero_pieces(dedup, &mut c, &mut cache, e.len, max as u64) {
                    Ok(v) => Box::new(v.into_iter().map(Ok)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            }
        })
}

/// Where a restored volume goes.
pub enum Target<'a> {
    /// An image file: zero blocks are skipped with a seek, so holes stay holes.
    Image(&'a mut File),
    /// A device: every byte is written, zeros too (a device has no holes to keep).
    Device(&'a mut File),
}

const BLOCK: usize = 4096;

/// Write the volume file at `path` of a snapshot (`size` bytes) to `target`, authenticating
/// every chunk; returns the bytes written (excluding holes skipped in an image).
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    target: Target<'_>,
) -> Result<(u64, u64)> {
    let node = crate::browse::find_node(repo, index, root, path)?
        .ok_or_else(|| Error::Invalid(format!("{path} is not in the snapshot")))?;
    if node.inline.is_some() {
        // Volume images are always stored as chunks; a small file is not one.
        return Err(Error::Invalid(format!(
            "{path} is a small file stored inline, not a volume image"
        )));
    }
    let (f, sparse) = match target {
        Target::Image(f) => (f, true),
        Target::Device(f) => (f, false),
    };
    let io = |e: io::Error| Error::io("writing the volume to", Path::new(path), e);
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    // Ids of chunks seen to be all zeros, with their lengths: decoded once each.
    let mut zeros: HashMap<Id, usize> = HashMap::new();
    let (mut pos, mut written) = (0u64, 0u64);
    let wrote_zeros = |f: &mut File, n: usize, pos: u64| -> io::Result<u64> {
        if sparse {
            f.seek(SeekFrom::Start(pos + n as u64))?;
            Ok(0)
        } else {
            let z = vec![0u8; n.min(1 << 20)];
            let mut left = n;
            while left > 0 {
                let k = left.min(z.len());
                f.write_all(&z[..k])?;
                left -= k;
            }
            Ok(n as u64)
        }
    };
    for id in &node.content {
        if let Some(&n) = zeros.get(id) {
            written += wrote_zeros(f, n, pos).map_err(io)?;
            pos += n as u64;
            continue;
        }
        let data = repo.read_blob(index, BlobType::Data, id)?;
        if data.iter().all(|b| *b == 0) {
            zeros.insert(*id, data.len());
            written += wrote_zeros(f, data.len(), pos).map_err(io)?;
            pos += data.len() as u64;
            continue;
        }
        for block in data.chunks(BLOCK) {
            if sparse && block.iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(block.len() as i64)).map_err(io)?;
            } else {
                f.write_all(block).map_err(io)?;
                written += block.len() as u64;
            }
            pos += block.len() as u64;
        }
    }
    if pos != node.size {
        return Err(Error::Invalid(format!(
            "{path}: the snapshot says {} bytes but its chunks hold {pos}",
            node.size
        )));
    }
    if sparse {
        f.set_len(pos).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    Ok((pos, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(size: u64, data: &[(u64, usize)]) -> (tempfile::TempDir, File) {
        let d = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("img"))
            .unwrap();
        f.set_len(size).unwrap();
        for (at, n) in data {
            f.write_all_at(&vec![7u8; *n], *at).unwrap();
        }
        f.sync_all().unwrap();
        (d, f)
    }

    fn covers(ext: &[Extent], size: u64) {
        let mut at = 0;
        for e in ext {
            assert_eq!(e.start, at, "{ext:?}");
            assert!(e.len > 0, "{ext:?}");
            at += e.len;
        }
        assert_eq!(at, size, "{ext:?}");
    }

    #[test]
    fn extents_cover_the_file_with_data_where_written() {
        let m = 1u64 << 20;
        let (_d, f) = sparse(64 * m, &[(m, 4096), (40 * m, 2 * m as usize)]);
        let ext = extents(&f, 64 * m, 512 * 1024).unwrap();
        covers(&ext, 64 * m);
        let data: u64 = ext.iter().filter(|e| e.data).map(|e| e.len).sum();
        assert!((2 * m + 4096..4 * m).contains(&data), "{ext:?}");
        assert!(ext
            .iter()
            .any(|e| e.data && e.start <= m && e.start + e.len > m));
        assert!(!ext[0].data, "the start is a hole: {ext:?}");
        // Short holes are read as data: the two runs merge.
        let (_d, f) = sparse(8 * m, &[(0, 4096), (3 * 4096, 4096)]);
        let ext = extents(&f, 8 * m, 512 * 1024).unwrap();
        covers(&ext, 8 * m);
        assert_eq!(ext.iter().filter(|e| e.data).count(), 1, "{ext:?}");
    }

    #[test]
    fn an_empty_image_is_one_hole_and_a_dense_one_one_extent() {
        let (_d, f) = sparse(1 << 20, &[]);
        assert_eq!(
            extents(&f, 1 << 20, 4096).unwrap(),
            vec![Extent {
                start: 0,
                len: 1 << 20,
                data: false
            }]
        );
        let (_d, f) = sparse(1 << 16, &[(0, 1 << 16)]);
        let ext = extents(&f, 1 << 16, 4096).unwrap();
        assert_eq!(ext.len(), 1);
        assert!(ext[0].data);
        assert!(extents(&f, 0, 4096).unwrap().is_empty());
    }

    #[test]
    fn known_ranges_become_data_and_the_rest_holes_and_bad_ranges_are_refused() {
        let k = 1u64 << 16;
        let ext = extents_of(&[(0, k), (10 * k, 12 * k)], 20 * k, 4096).unwrap();
        covers(&ext, 20 * k);
        assert_eq!(
            ext,
            vec![
                Extent {
                    start: 0,
                    len: k,
                    data: true
                },
                Extent {
                    start: k,
                    len: 9 * k,
                    data: false
                },
                Extent {
                    start: 10 * k,
                    len: 2 * k,
                    data: true
                },
                Extent {
                    start: 12 * k,
                    len: 8 * k,
                    data: false
                },
            ]
        );
        // A short hole between two ranges is read as data.
        let ext = extents_of(&[(0, k), (2 * k, 3 * k)], 3 * k, 2 * k).unwrap();
        assert_eq!(
            ext,
            vec![Extent {
                start: 0,
                len: 3 * k,
                data: true
            }]
        );
        assert_eq!(
            extents_of(&[], 5, 1).unwrap(),
            vec![Extent {
                start: 0,
                len: 5,
                data: false
            }]
        );
        for bad in [
            vec![(0, 2 * k), (k, 3 * k)],
            vec![(2 * k, 3 * k), (0, k)],
            vec![(0, 21 * k)],
            vec![(k, k)],
        ] {
            let e = extents_of(&bad, 20 * k, 4096).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
