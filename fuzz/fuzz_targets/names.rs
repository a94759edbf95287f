//! A file name a server accepts is one plain path component, and the folder
//! it is stored in stays inside its owner's folder.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if ringdfs::names::validate_name(name).is_err() {
        return;
    }
    assert!(!name.contains(['/', '\\', '\0']), "{name:?}");
    let parts: Vec<_> = Path::new(name).components().collect();
    assert!(
        matches!(parts.as_slice(), [Component::Normal(_)]),
        "{name:?}"
    );
    let root = Path::new("/srv/data/dfs1");
    let dir = ringdfs::store::file_dir(root, "alice", name);
    assert!(dir.starts_with(root.join("users").join("alice")), "{name:?}");
    assert_eq!(dir.components().count(), root.components().count() + 3);
});
