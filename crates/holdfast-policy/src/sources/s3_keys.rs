//! Turning a flat listing of keys (sorted, as S3 lists them) into the steps that build a tree:
//! open a directory, a file in the top directory, close the top directory. The keys of one
//! prefix are contiguous in lexicographic order, so a stack of open directories suffices; a
//! key out of order, a key that cannot be a path, and a key that is both an object and a
//! prefix are refused naming the key (never a silently wrong tree).

use super::bucket::BucketError;

/// One step of building the tree from the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Open a directory inside the top one: its name there, and its full key prefix (ending `/`).
    Open {
        /// The directory's name in its parent.
        name: String,
        /// The key prefix of everything under it.
        prefix: String,
    },
    /// An object, a file of the top directory named `name`.
    File {
        /// Its name in the top directory.
        name: String,
    },
    /// Close the top directory (the last `Close` closes the root).
    Close,
}

/// A directory being filled.
struct Open {
    /// Its name in the parent (empty for the root).
    name: String,
    /// Its key prefix.
    prefix: String,
    /// Names of files here each a prefix of the next: the only earlier names a later
    /// directory's name can equal (a name between `n` and `n/...` in order starts with `n`).
    chain: Vec<String>,
}

impl Open {
    /// Drop the names of `chain` that cannot be a prefix of `name` or of any later name.
    fn trim(&mut self, name: &str) {
        while self
            .chain
            .last()
            .is_some_and(|c| !name.starts_with(c.as_str()))
        {
            self.chain.pop();
        }
    }
}

/// The state of building a tree from keys under `root`, given in strictly increasing order.
pub(crate) struct Steps {
    open: Vec<Open>,
    prev: Option<String>,
}

impl Steps {
    /// Start with the directory of key prefix `root` (`""` or ending `/`) open.
    pub(crate) fn new(root: &str) -> Steps {
        Steps {
            open: vec![Open {
                name: String::new(),
                prefix: root.to_string(),
                chain: Vec::new(),
            }],
            prev: None,
        }
    }

    /// The steps for the next key of the listing, appended to `out`. A directory marker (a
    /// key ending `/`) opens its directory (an empty one is kept) and is no file.
    pub(crate) fn key(&mut self, key: &str, out: &mut Vec<Step>) -> Result<(), BucketError> {
        if let Some(prev) = &self.prev {
            if key <= prev.as_str() {
                return Err(BucketError::Unsorted {
                    prev: prev.clone(),
                    key: key.to_string(),
                });
            }
        }
        self.prev = Some(key.to_string());
        let root = &self.open[0].prefix;
        let Some(rel) = key.strip_prefix(root.as_str()) else {
            return Err(BucketError::Outside {
                key: key.to_string(),
                prefix: root.clone(),
            });
        };
        if rel.is_empty() {
            return Ok(()); // the root's own marker
        }
        let (dirs, file) = match rel.strip_suffix('/') {
            Some(d) => (d, None),
            None => match rel.rsplit_once('/') {
                Some((d, f)) => (d, Some(f)),
                None => ("", Some(rel)),
            },
        };
        let parts: Vec<&str> = if dirs.is_empty() {
            Vec::new()
        } else {
            dirs.split('/').collect()
        };
        if parts
            .iter()
            .copied()
            .chain(file)
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(BucketError::BadKey(key.to_string()));
        }
        // Close the directories the key is not in.
        let same = parts
            .iter()
            .zip(&self.open[1..])
            .take_while(|(p, o)| **p == o.name)
            .count();
        while self.open.len() > same + 1 {
            self.open.pop();
            out.push(Step::Close);
        }
        // Open the directories down to the key's parent.
        for p in &parts[same..] {
            let top = self.open.last_mut().expect("the root stays open");
            top.trim(p);
            if top.chain.last().is_some_and(|c| c == p) {
                return Err(BucketError::ObjectAndPrefix {
                    object: format!("{}{p}", top.prefix),
                    key: key.to_string(),
                });
            }
            let prefix = format!("{}{p}/", top.prefix);
            out.push(Step::Open {
                name: p.to_string(),
                prefix: prefix.clone(),
            });
            self.open.push(Open {
                name: p.to_string(),
                prefix,
                chain: Vec::new(),
            });
        }
        if let Some(f) = file {
            let top = self.open.last_mut().expect("the root stays open");
            top.trim(f);
            top.chain.push(f.to_string());
            out.push(Step::File {
                name: f.to_string(),
            });
        }
        Ok(())
    }

    /// The end of the listing: close every open directory, the root last.
    pub(crate) fn finish(&mut self, out: &mut Vec<Step>) {
        while self.open.pop().is_some() {
            out.push(Step::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str, prefix: &str) -> Step {
        Step::Open {
            name: name.into(),
            prefix: prefix.into(),
        }
    }
    fn file(name: &str) -> Step {
        Step::File { name: name.into() }
    }

    fn steps(root: &str, keys: &[&str]) -> Result<Vec<Step>, String> {
        let mut s = Steps::new(root);
        let mut out = Vec::new();
        for k in keys {
            s.key(k, &mut out).map_err(|e| e.to_string())?;
        }
        s.finish(&mut out);
        Ok(out)
    }

    #[test]
    fn sorted_keys_open_and_close_directories_around_their_files() {
        use Step::Close;
        // '.' < '/' < '0': `a/x` lies between `a.txt` and `a0`.
        let got = steps(
            "",
            &["a.txt", "a/b/c", "a/x", "a0", "b", "d/", "e/f/", "e/f/g"],
        )
        .unwrap();
        let want = vec![
            file("a.txt"),
            open("a", "a/"),
            open("b", "a/b/"),
            file("c"),
            Close,
            file("x"),
            Close,
            file("a0"),
            file("b"),
            open("d", "d/"),
            Close,
            open("e", "e/"),
            open("f", "e/f/"),
            file("g"),
            Close,
            Close,
            Close,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn keys_are_relative_to_the_root_and_its_marker_is_no_file() {
        let got = steps("p/", &["p/", "p/a", "p/q/r"]).unwrap();
        assert_eq!(
            got,
            vec![
                file("a"),
                open("q", "p/q/"),
                file("r"),
                Step::Close,
                Step::Close
            ]
        );
        let e = steps("p/", &["p/a", "q/b"]).unwrap_err();
        assert!(e.contains("\"q/b\"") && e.contains("\"p/\""), "{e}");
    }

    #[test]
    fn a_key_out_of_order_or_repeated_is_refused_naming_it() {
        let e = steps("", &["a", "c", "b"]).unwrap_err();
        assert!(e.contains("\"b\"") && e.contains("\"c\""), "{e}");
        let e = steps("", &["a/x", "a/x"]).unwrap_err();
        assert!(e.contains("\"a/x\""), "{e}");
        // Leaving a directory and coming back would split it in two: refused as out of order.
        let e = steps("", &["a/x", "b", "a/y"]).unwrap_err();
        assert!(e.contains("\"a/y\""), "{e}");
    }

    #[test]
    fn an_object_that_is_also_a_prefix_is_refused_naming_both() {
        for keys in [
            &["a", "a/x"][..],
            &["a", "a-b", "a.txt", "a/x"],
            &["d/a", "d/a!", "d/a/b/c"],
            &["a", "a/"],
        ] {
            let e = steps("", keys).unwrap_err();
            let last = keys.last().unwrap();
            let object = if keys[0] == "d/a" { "d/a" } else { "a" };
            assert!(
                e.contains(&format!("{object:?}")) && e.contains(&format!("{last:?}")),
                "{keys:?}: {e}"
            );
            assert!(e.contains("both"), "{e}");
        }
        // A name that merely starts like an earlier file's is fine.
        assert!(steps("", &["a", "ab", "ab0/x", "b", "b0/c"]).is_ok());
    }

    #[test]
    fn empty_dot_and_dot_dot_parts_are_refused() {
        for k in ["a//b", "./a", "a/../b", "a/.", "a//", "x/.."] {
            let e = steps("", &[k]).unwrap_err();
            assert!(
                e.contains(&format!("{k:?}")) && e.contains("empty"),
                "{k}: {e}"
            );
        }
    }
}
