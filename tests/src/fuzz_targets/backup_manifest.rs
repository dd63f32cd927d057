//! The `backup_manifest` target: a backup manifest's plaintext (what a
//! hostile store serves, once it opened under the backup key).

/// `Manifest::decode` never panics and allocates for at most
/// `MANIFEST_ENTRIES_MAX` entries; a manifest that decodes is signed by its
/// device and its entries keep the invariants docs/SERVICES.md "Manifest"
/// states: they chain from position 0, sealed segments whole first, then
/// tail pieces of one segment in increasing run order, none after the
/// manifest's run.
pub fn backup_manifest(data: &[u8]) {
    use peers_backup::{EntryKind, MANIFEST_ENTRIES_MAX, Manifest};
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    assert!(manifest.run >= 1);
    assert!(manifest.entries.len() <= MANIFEST_ENTRIES_MAX as usize);
    let mut end = 0;
    let mut previous_run = 0;
    for entry in &manifest.entries {
        assert_eq!(entry.base + entry.offset, end, "{manifest:?}");
        match entry.kind {
            EntryKind::Segment => assert_eq!((entry.offset, entry.run, previous_run), (0, 0, 0)),
            EntryKind::Tail => {
                assert!(entry.run > previous_run && entry.run <= manifest.run);
                previous_run = entry.run;
            }
        }
        end = entry.end();
    }
    assert!(previous_run > 0, "a manifest ends with a tail piece");
    assert_eq!(manifest.log_end(), end);
}

#[cfg(test)]
mod tests {
    /// The committed seeds reach both sides: two signed manifests decode
    /// (so mutations start from the accepting path), a count over the limit
    /// does not.
    #[test]
    fn committed_seeds_decode_as_named() {
        let seeds =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/backup_manifest");
        let read = |name: &str| std::fs::read(seeds.join(name)).expect("seed");
        for name in ["spec_vector", "segments_and_pieces"] {
            assert!(
                peers_backup::Manifest::decode(&read(name)).is_ok(),
                "{name}"
            );
            super::backup_manifest(&read(name));
        }
        assert!(peers_backup::Manifest::decode(&read("count_over_limit")).is_err());
    }
}
