//! thin_dump's XML (`thin_dump -f xml`, thin-provisioning-tools) read into the allocated byte
//! ranges of ONE thin device: its `<range_mapping origin_begin= length=>` and
//! `<single_mapping origin_block=>` elements times the superblock's `data_block_size` (512-byte
//! sectors), adjacent runs merged. The output of a tool is untrusted input: it is streamed
//! (memory bounded by the merged ranges and one element), and anything malformed is refused
//! with the reason: a truncated document, a missing or unparsable number, an absurd block
//! size, overlapping or out-of-order mappings, a mapping past the device's end, a device
//! listed twice, a count that disagrees with `mapped_blocks`, an unknown element inside the
//! device (a mapping this reader does not understand must not be skipped).

use std::io::{self, BufReader, Read};

use quick_xml::events::{BytesStart, Event};

/// The most merged ranges kept (16 bytes each): more is refused as absurd.
pub const MAX_RANGES: usize = 1 << 22;
/// The longest run of bytes without a `>` (one element): more is refused.
const MAX_ELEMENT: u64 = 64 * 1024;
/// dm-thin's block sizes: a multiple of 64 KiB, at most 1 GiB (kernel thin-provisioning.txt).
const MIN_BLOCK_SECTORS: u64 = 128;
const MAX_BLOCK_SECTORS: u64 = 2_097_152;

/// Why thin_dump's output was refused.
#[derive(Debug, thiserror::Error)]
pub enum ThinXmlError {
    /// Not well-formed XML (or unreadable).
    #[error("thin_dump's output is not well-formed XML (at byte {at}): {why}")]
    Xml {
        /// The byte offset.
        at: u64,
        /// The parser's reason.
        why: String,
    },
    /// Well-formed but not what thin_dump writes.
    #[error("thin_dump's output is malformed (at byte {at}): {why}")]
    Malformed {
        /// The byte offset.
        at: u64,
        /// What is wrong.
        why: String,
    },
}

/// Passes bytes through, failing once one element (bytes between two `>`) is longer than
/// [`MAX_ELEMENT`], so a hostile element cannot grow the parser's buffer without bound.
struct Bounded<R> {
    inner: R,
    since: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &buf[..n] {
            self.since = if *b == b'>' { 0 } else { self.since + 1 };
            if self.since > MAX_ELEMENT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an element longer than {MAX_ELEMENT} bytes"),
                ));
            }
        }
        Ok(n)
    }
}

struct Ranges {
    /// Bytes per data block.
    block: u64,
    /// Device size in bytes.
    size: u64,
    /// End block of the last mapping (mappings must come in order).
    next: u64,
    /// Blocks listed.
    count: u64,
    out: Vec<(u64, u64)>,
}

impl Ranges {
    fn add(&mut self, begin: u64, len: u64) -> Result<(), String> {
        if len == 0 {
            return Err(format!("a mapping of length 0 at block {begin}"));
        }
        let end = begin
            .checked_add(len)
            .ok_or_else(|| format!("a mapping at block {begin} of {len} blocks overflows"))?;
        if begin < self.next {
            return Err(format!(
                "mapping of blocks {begin}..{end} overlaps or precedes the one ending at block {}",
                self.next
            ));
        }
        let (s, e) = match (begin.checked_mul(self.block), end.checked_mul(self.block)) {
            (Some(s), Some(e)) if s < self.size && e - self.block < self.size => {
                (s, e.min(self.size))
            }
            _ => {
                return Err(format!(
                    "mapping of blocks {begin}..{end} ({} bytes each) is past the end of the {}-byte device",
                    self.block, self.size
                ))
            }
        };
        self.next = end;
        self.count += len;
        let full = self.out.len() >= MAX_RANGES;
        match self.out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ if full => {
                return Err(format!(
                    "more than {MAX_RANGES} separate mapped ranges; refusing to hold them"
                ))
            }
            _ => self.out.push((s, e)),
        }
        Ok(())
    }
}

fn attr(e: &BytesStart, name: &str) -> Result<Option<u64>, String> {
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        if a.key.as_ref() == name.as_bytes() {
            let v = std::str::from_utf8(&a.value).ok();
            return v
                .and_then(|v| v.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{name}={:?} is not a number",
                        String::from_utf8_lossy(&a.value)
                    )
                });
        }
    }
    Ok(None)
}

fn need(e: &BytesStart, name: &str) -> Result<u64, String> {
    let el = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    attr(e, name)?.ok_or_else(|| format!("<{el}> without {name}"))
}

/// The allocated byte ranges `[start, end)`, in order and merged, of thin device `dev_id` of a
/// `size`-byte device, from thin_dump's XML on `r`.
pub fn parse(r: impl Read, dev_id: u64, size: u64) -> Result<Vec<(u64, u64)>, ThinXmlError> {
    let mut x = quick_xml::Reader::from_reader(BufReader::new(Bounded { inner: r, since: 0 }));
    x.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    // Element names open, outermost first (at most superblock > device > mapping).
    let mut open: Vec<Vec<u8>> = Vec::new();
    let (mut ranges, mut seen, mut done) = (None::<Ranges>, false, false);
    let mut in_target = false;
    let mut expect: Option<u64> = None;
    loop {
        let at = x.buffer_position();
        let bad = |why: String| ThinXmlError::Malformed { at, why };
        let ev = x.read_event_into(&mut buf).map_err(|e| ThinXmlError::Xml {
            at: x.buffer_position(),
            why: e.to_string(),
        })?;
        let (e, empty) = match ev {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                buf.clear();
                continue;
            }
            Event::Text(t) => {
                if t.iter().any(|b| !b.is_ascii_whitespace()) {
                    return Err(bad("text where only elements belong".into()));
                }
                buf.clear();
                continue;
            }
            Event::CData(_) => return Err(bad("CDATA where only elements belong".into())),
            Event::End(_) => {
                let name = open.pop().unwrap_or_default();
                if name == b"device" && in_target {
                    in_target = false;
                    let r = ranges.as_ref().map(|r| r.count).unwrap_or(0);
                    if let Some(n) = expect.filter(|n| *n != r) {
                        return Err(bad(format!(
                            "device {dev_id} says mapped_blocks=\"{n}\" but lists {r} blocks"
                        )));
                    }
                }
                if name == b"superblock" {
                    done = true;
                }
                buf.clear();
                continue;
            }
            Event::Start(e) => (e.into_owned(), false),
            Event::Empty(e) => (e.into_owned(), true),
        };
        let name = e.name().as_ref().to_vec();
        let shown = String::from_utf8_lossy(&name).into_owned();
        match (open.len(), name.as_slice()) {
            (0, b"superblock") if !done && ranges.is_none() => {
                let sectors = need(&e, "data_block_size").map_err(bad)?;
                if !(MIN_BLOCK_SECTORS..=MAX_BLOCK_SECTORS).contains(&sectors)
                    || sectors % MIN_BLOCK_SECTORS != 0
                {
                    return Err(bad(format!(
                        "data_block_size=\"{sectors}\" sectors is not a thin pool's block size (a multiple of 128, at most 2097152)"
                    )));
                }
                ranges = Some(Ranges {
                    block: sectors * 512,
                    size,
                    next: 0,
                    count: 0,
                    out: Vec::new(),
                });
            }
            (0, _) => {
                return Err(bad(format!(
                    "<{shown}> where one <superblock> was expected"
                )))
            }
            (1, b"device") => {
                if need(&e, "dev_id").map_err(bad)? == dev_id {
                    if seen {
                        return Err(bad(format!("device {dev_id} is listed twice")));
                    }
                    seen = true;
                    in_target = !empty;
                    expect = attr(&e, "mapped_blocks").map_err(bad)?;
                    if empty && expect.is_some_and(|n| n != 0) {
                        return Err(bad(format!(
                            "device {dev_id} says mapped_blocks=\"{}\" but lists none",
                            expect.unwrap_or(0)
                        )));
                    }
                }
            }
            (2, b"range_mapping") if in_target => {
                let b = need(&e, "origin_begin").map_err(bad)?;
                let n = need(&e, "length").map_err(bad)?;
                if let Some(r) = ranges.as_mut() {
                    r.add(b, n).map_err(bad)?;
                }
            }
            (2, b"single_mapping") if in_target => {
                let b = need(&e, "origin_block").map_err(bad)?;
                if let Some(r) = ranges.as_mut() {
                    r.add(b, 1).map_err(bad)?;
                }
            }
            (_, _) if in_target => {
                return Err(bad(format!(
                    "<{shown}> inside device {dev_id}: not a mapping this reader knows, so its blocks could be missed"
                )))
            }
            // Other devices' mappings and anything outside a device: not ours.
            (d, _) if d <= 3 => {}
            _ => return Err(bad("elements nested deeper than thin_dump writes".into())),
        }
        if !empty {
            open.push(name);
        }
        buf.clear();
    }
    let at = x.buffer_position();
    let bad = |why: String| ThinXmlError::Malformed { at, why };
    if !done {
        return Err(bad(
            "it ended before </superblock> (truncated: thin_dump failed or was cut short)".into(),
        ));
    }
    if !seen {
        return Err(bad(format!(
            "the pool's metadata holds no thin device {dev_id}"
        )));
    }
    Ok(ranges.map(|r| r.out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K64: u64 = 65536;

    fn doc(devices: &str) -> String {
        format!(
            "<superblock uuid=\"\" time=\"1\" transaction=\"2\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"1000\">\n{devices}</superblock>\n"
        )
    }

    #[test]
    fn mappings_become_merged_byte_ranges_of_the_one_device() {
        let x = doc(concat!(
            "<device dev_id=\"1\" mapped_blocks=\"6\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n",
            "  <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"3\" time=\"0\"/>\n",
            "  <single_mapping origin_block=\"3\" data_block=\"10\" time=\"0\"/>\n",
            "  <single_mapping origin_block=\"7\" data_block=\"11\" time=\"0\"/>\n",
            "  <range_mapping origin_begin=\"8\" data_begin=\"30\" length=\"1\" time=\"0\"/>\n",
            "</device>\n",
            "<device dev_id=\"2\" mapped_blocks=\"1\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n",
            "  <single_mapping origin_block=\"5\" data_block=\"12\" time=\"0\"/>\n",
            "</device>\n",
        ));
        let r = parse(x.as_bytes(), 1, 100 * K64).unwrap();
        assert_eq!(r, vec![(0, 4 * K64), (7 * K64, 9 * K64)]);
        let r = parse(x.as_bytes(), 2, 100 * K64).unwrap();
        assert_eq!(r, vec![(5 * K64, 6 * K64)]);
        // The last block may end past a device that is not a whole number of blocks.
        let r = parse(x.as_bytes(), 2, 5 * K64 + 512).unwrap();
        assert_eq!(r, vec![(5 * K64, 5 * K64 + 512)]);
        // A device with no mappings is all holes.
        let x = doc("<device dev_id=\"4\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\"/>\n");
        assert_eq!(parse(x.as_bytes(), 4, K64).unwrap(), vec![]);
    }

    #[test]
    fn malformed_output_is_refused_with_the_reason() {
        let dev = |m: &str, n: u32| {
            doc(&format!(
                "<device dev_id=\"1\" mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n{m}</device>\n"
            ))
        };
        let good = dev(
            "<range_mapping origin_begin=\"2\" data_begin=\"0\" length=\"2\" time=\"0\"/>\n",
            2,
        );
        let cut = &good[..good.len() / 2];
        let cases: Vec<(String, &str)> = vec![
            (cut.to_string(), ""),
            (good.replace("</superblock>\n", ""), "truncated"),
            (String::new(), "truncated"),
            (good.replace("length=\"2\"", "length=\"18446744073709551615\""), "overflows"),
            (good.replace("length=\"2\"", "length=\"99999999999\""), "past the end"),
            (good.replace("length=\"2\"", "length=\"-2\""), "not a number"),
            (good.replace("length=\"2\"", "length=\"0\""), "length 0"),
            (good.replace(" length=\"2\"", ""), "without length"),
            (dev("<single_mapping origin_block=\"4\" data_block=\"0\" time=\"0\"/>\n<single_mapping origin_block=\"3\" data_block=\"1\" time=\"0\"/>\n", 2), "overlaps"),
            (dev("<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"4\" time=\"0\"/>\n<single_mapping origin_block=\"2\" data_block=\"9\" time=\"0\"/>\n", 5), "overlaps"),
            (dev("<single_mapping origin_block=\"100\" data_block=\"0\" time=\"0\"/>\n", 1), "past the end"),
            (dev("<single_mapping origin_block=\"3\" data_block=\"0\" time=\"0\"/>\n", 7), "mapped_blocks"),
            (dev("<ref name=\"7\"/>\n", 0), "not a mapping"),
            (good.replace("data_block_size=\"128\"", "data_block_size=\"0\""), "block size"),
            (good.replace("data_block_size=\"128\"", "data_block_size=\"100\""), "block size"),
            (good.replace("data_block_size=\"128\"", "data_block_size=\"4294967296\""), "block size"),
            (good.replace("dev_id=\"1\"", "dev_id=\"9\""), "no thin device 1"),
            (format!("{}{}", good.replace("</superblock>\n", ""), &good[good.find("<device").unwrap()..]), "twice"),
            (good.replace("<superblock", "<superblocks"), "expected"),
            (good.replace("</device>", "junk</device>"), "text"),
            (good.replace("</device>", "</devise>"), ""),
            (format!("{good}<superblock data_block_size=\"128\"></superblock>"), "expected"),
            (good.replace("time=\"0\"/>", &format!("time=\"0\" pad=\"{}\"/>", "x".repeat(70_000))), ""),
        ];
        for (x, why) in cases {
            let e = parse(x.as_bytes(), 1, 64 * K64).expect_err(&x[..x.len().min(300)]);
            assert!(
                e.to_string().contains(why),
                "{e} for {:?}",
                &x[..x.len().min(300)]
            );
        }
        assert_eq!(
            parse(good.as_bytes(), 1, 64 * K64).unwrap(),
            vec![(2 * K64, 4 * K64)]
        );
    }
}
