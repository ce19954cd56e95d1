//! The backend registry: a repository location (a directory, `file://DIR`, `s3://…`,
//! `azblob://…`, `sftp://…`) to the [`Storage`] that serves it.
//!
//! Which backends exist is decided at build time by this crate's features (`local`, `s3`,
//! `azblob`, `sftp`); a location whose backend was not built says which feature it needs. A
//! front end or a test may [`register`](Backends::register) more schemes (an in-memory store,
//! a fault-injecting wrapper).

use std::sync::Arc;

use holdfast_storage::Storage;

/// Builds the storage for one location of its scheme; the error says why it cannot.
pub type Constructor = fn(&str) -> Result<Arc<dyn Storage>, String>;

/// Errors of choosing or building a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No repository location was given at all.
    #[error("no repository given: pass --repo DIR or set HOLDFAST_REPOSITORY")]
    NoLocation,
    /// The URL scheme is unknown.
    #[error("repository URL scheme {scheme:?} is not supported: use {forms}")]
    UnsupportedScheme {
        /// The scheme asked for.
        scheme: String,
        /// The location forms this build knows.
        forms: String,
    },
    /// The scheme is known, but this build does not include its backend.
    #[error("this build has no {what} backend (feature `{feature}`): rebuild holdfast with it, or use another location")]
    NotBuilt {
        /// What kind of store.
        what: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The backend refused the location (bad URL, missing credentials, cannot connect).
    #[error("repository location {location}: {message}")]
    Location {
        /// The location as given.
        location: String,
        /// What the backend said.
        message: String,
    },
}

/// One scheme of the registry.
#[derive(Clone)]
struct Backend {
    scheme: String,
    /// How a location of this scheme is written (for error messages).
    form: String,
    /// What kind of store (for "not built" errors).
    what: &'static str,
    /// The cargo feature that builds it.
    feature: &'static str,
    /// `None`: known, but not in this build.
    open: Option<Constructor>,
}

/// The URL → backend registry. [`Backends::builtin`] holds every backend of this build.
#[derive(Clone)]
pub struct Backends {
    list: Vec<Backend>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.list
                    .iter()
                    .map(|b| (&b.scheme, b.open.is_some(), b.feature)),
            )
            .finish()
    }
}

impl Default for Backends {
    fn default() -> Self {
        Backends::builtin()
    }
}

#[cfg(feature = "local")]
fn local(loc: &str) -> Result<Arc<dyn Storage>, String> {
    Ok(Arc::new(holdfast_backend_local::LocalStorage::new(loc)))
}

#[cfg(feature = "s3")]
fn s3(loc: &str) -> Result<Arc<dyn Storage>, String> {
    let c = holdfast_backend_opendal::S3Config::from_url(loc)?;
    Ok(Arc::new(holdfast_backend_opendal::ObjectStorage::s3(&c)?))
}

#[cfg(feature = "azblob")]
fn azblob(loc: &str) -> Result<Arc<dyn Storage>, String> {
    let c = holdfast_backend_opendal::AzblobConfig::from_url(loc)?;
    Ok(Arc::new(holdfast_backend_opendal::ObjectStorage::azblob(
        &c,
    )?))
}

#[cfg(feature = "sftp")]
fn sftp(loc: &str) -> Result<Arc<dyn Storage>, String> {
    let c = holdfast_backend_sftp::SftpConfig::from_url(loc)?;
    Ok(Arc::new(holdfast_backend_sftp::SftpStorage::connect(&c)?))
}

impl Backends {
    /// A registry with no backend (for tests and front ends that choose their own).
    pub fn empty() -> Backends {
        Backends { list: Vec::new() }
    }

    /// Every backend this build knows; those whose feature is off answer
    /// [`BackendError::NotBuilt`].
    pub fn builtin() -> Backends {
        let mut b = Backends::empty();
        b.known(
            "file",
            "a directory, file://DIR",
            "local-directory",
            "local",
            {
                #[cfg(feature = "local")]
                {
                    Some(local as Constructor)
                }
                #[cfg(not(feature = "local"))]
                {
                    None
                }
            },
        );
        b.known("s3", "s3://BUCKET/PREFIX", "object-storage", "s3", {
            #[cfg(feature = "s3")]
            {
                Some(s3 as Constructor)
            }
            #[cfg(not(feature = "s3"))]
            {
                None
            }
        });
        b.known(
            "azblob",
            "azblob://CONTAINER/PREFIX",
            "Azure Blob",
            "azblob",
            {
                #[cfg(feature = "azblob")]
                {
                    Some(azblob as Constructor)
                }
                #[cfg(not(feature = "azblob"))]
                {
                    None
                }
            },
        );
        b.known("sftp", "sftp://[USER@]HOST[:PORT]/PATH", "SFTP", "sftp", {
            #[cfg(feature = "sftp")]
            {
                Some(sftp as Constructor)
            }
            #[cfg(not(feature = "sftp"))]
            {
                None
            }
        });
        b
    }

    fn known(
        &mut self,
        scheme: &str,
        form: &str,
        what: &'static str,
        feature: &'static str,
        open: Option<Constructor>,
    ) {
        self.list.retain(|b| b.scheme != scheme);
        self.list.push(Backend {
            scheme: scheme.into(),
            form: form.into(),
            what,
            feature,
            open,
        });
    }

    /// Add (or replace) the backend of `scheme`. `file` also serves plain directories; the
    /// constructor of `file` receives the path without `file://`, every other one the whole
    /// location.
    pub fn register(&mut self, scheme: &str, form: &str, open: Constructor) {
        self.known(scheme, form, "registered", "none", Some(open));
    }

    /// The schemes this registry can build now.
    pub fn schemes(&self) -> Vec<&str> {
        self.list
            .iter()
            .filter(|b| b.open.is_some())
            .map(|b| b.scheme.as_str())
            .collect()
    }

    /// The storage for a location string.
    pub fn storage(&self, loc: &str) -> Result<Arc<dyn Storage>, BackendError> {
        let (scheme, arg) = match loc.split_once("://") {
            Some(("file", path)) => ("file", path),
            Some((scheme, _)) => (scheme, loc),
            None => ("file", loc),
        };
        let Some(b) = self.list.iter().find(|b| b.scheme == scheme) else {
            return Err(BackendError::UnsupportedScheme {
                scheme: scheme.into(),
                forms: self
                    .list
                    .iter()
                    .map(|b| b.form.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let Some(open) = b.open else {
            return Err(BackendError::NotBuilt {
                what: b.what,
                feature: b.feature,
            });
        };
        open(arg).map_err(|message| BackendError::Location {
            location: loc.into(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(loc: &str) -> Result<Arc<dyn Storage>, String> {
        Err(format!("refused {loc}"))
    }

    #[test]
    fn unknown_scheme_lists_the_forms() {
        let e = Backends::builtin().storage("ftp://x/y").unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, BackendError::UnsupportedScheme { .. }), "{m}");
        for form in ["file://DIR", "s3://BUCKET/PREFIX", "azblob://", "sftp://"] {
            assert!(m.contains(form), "{m}");
        }
    }

    #[test]
    fn dispatch_by_scheme_and_file_strips_its_prefix() {
        let mut b = Backends::empty();
        b.register("file", "a directory", refuse);
        b.register("mem", "mem://NAME", refuse);
        let m = |loc: &str| match b.storage(loc) {
            Err(BackendError::Location { location, message }) => (location, message),
            other => panic!("{loc}: {other:?}"),
        };
        assert_eq!(m("/srv/r").1, "refused /srv/r");
        assert_eq!(m("file:///srv/r").1, "refused /srv/r");
        assert_eq!(m("file:///srv/r").0, "file:///srv/r");
        assert_eq!(m("mem://a").1, "refused mem://a");
        assert!(matches!(
            b.storage("s3://b/p"),
            Err(BackendError::UnsupportedScheme { .. })
        ));
        assert_eq!(b.schemes(), vec!["file", "mem"]);
    }

    #[test]
    fn a_known_backend_left_out_of_the_build_names_its_feature() {
        let mut b = Backends::empty();
        b.known("s3", "s3://B/P", "object-storage", "s3", None);
        let e = b.storage("s3://b/p").unwrap_err();
        assert!(
            e.to_string().contains("feature `s3`"),
            "{e}: must name the feature to build with"
        );
        assert!(b.schemes().is_empty());
    }

    #[test]
    fn register_replaces_a_scheme() {
        let mut b = Backends::builtin();
        let n = b.list.len();
        b.register("s3", "s3://", refuse);
        assert_eq!(b.list.len(), n);
        assert!(matches!(
            b.storage("s3://b/p"),
            Err(BackendError::Location { .. })
        ));
    }
}
