//! Trees: `Tree::decode`; an accepted tree must survive `encode` and `decode` unchanged, and
//! lookups by name of its own entries must find them.
#![no_main]

use holdfast_core::tree::Tree;
use holdfast_core::Id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(&Id::default(), data) else {
        return;
    };
    let enc = t.encode();
    let back = Tree::decode(&Id::default(), &enc).expect("re-encoded tree must decode");
    assert_eq!(back, t, "decode(encode(t)) != t");
    for n in &t.nodes {
        assert_eq!(t.get(&n.name.0), Some(n));
    }
});
