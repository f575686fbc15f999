//! The version of the pinned layout.
//!
//! Pins outlive the binary that made them: a new agent (or an older one,
//! after a rollback) meets the maps, programs and links of another release.
//! [`VERSION`] names the layout of everything a later binary may read or
//! share: every map in [`RECORDED`] (name, type, key size, value size) and
//! the meaning of every field of their keys and values. Pins of version
//! `N` live in `<bpffs-root>/<node>/v<N>/` (`docs/maps.md`).
//!
//! The rule: bump [`VERSION`] whenever any of that changes (a field added,
//! removed, resized or read differently, a map added, removed or retyped),
//! then append the new table to [`RECORDED`] and its fingerprint to
//! [`HISTORY`]. An agent meeting an older version migrates to its own
//! without a gap; one meeting a newer version refuses to touch it. The unit
//! tests below fail when a pinned struct changes size without the table,
//! and the table without the version.
//!
//! `SCRATCH` and `EVENT_BUDGET` are private to one binary's classifiers and
//! are not part of the layout: a binary of the same version with another
//! shape replaces them.

/// The layout this binary reads and writes.
pub const VERSION: u32 = 5;

/// Pins without a version: the maps directly in `<bpffs-root>/<node>/`,
/// as releases before versioned pins made them. Their maps have the shapes
/// of version 2.
pub const LEGACY: u32 = 1;

/// The oldest version whose `CONNTRACK` (`CtKey`, `CtValue` and the meaning
/// of their fields) is the one of [`VERSION`]: an upgrade from it carries
/// the conntrack map over, one from an older version starts it empty.
pub const CONNTRACK_SINCE: u32 = LEGACY;

/// `bpf_map_type` numbers of the recorded maps.
pub const TYPE_HASH: u32 = 1;
pub const TYPE_ARRAY: u32 = 2;
pub const TYPE_PERCPU_ARRAY: u32 = 6;
pub const TYPE_LRU_HASH: u32 = 9;
pub const TYPE_LPM_TRIE: u32 = 11;
pub const TYPE_ARRAY_OF_MAPS: u32 = 12;
pub const TYPE_HASH_OF_MAPS: u32 = 13;
pub const TYPE_RINGBUF: u32 = 27;

/// One pinned map of the layout: name (`<OUTER>/inner` for the inner-map
/// template of a map of maps), map type, key size, value size.
pub type MapLayout = (&'static str, u32, u32, u32);

/// The maps of [`VERSION`], sorted by name. A test in `datapath` holds the
/// eBPF object to it.
pub const RECORDED: &[MapLayout] = &[
    ("CONFIG", TYPE_ARRAY, 4, 8),
    ("CONNTRACK", TYPE_LRU_HASH, 44, 16),
    ("CONNTRACK_POD", TYPE_ARRAY_OF_MAPS, 4, 4),
    ("CONNTRACK_POD/inner", TYPE_LRU_HASH, 44, 16),
    ("COUNTERS", TYPE_PERCPU_ARRAY, 4, 48),
    ("ENDPOINTS", TYPE_HASH, 4, 160),
    ("ENDPOINT_CELLS", TYPE_ARRAY_OF_MAPS, 4, 4),
    ("ENDPOINT_CELLS/inner", TYPE_ARRAY, 4, 168),
    ("EVENTS", TYPE_RINGBUF, 0, 0),
    ("EVENTS_LOST", TYPE_PERCPU_ARRAY, 4, 8),
    ("FRAGMENTS", TYPE_LRU_HASH, 44, 8),
    ("FRAGMENTS_POD", TYPE_ARRAY_OF_MAPS, 4, 4),
    ("FRAGMENTS_POD/inner", TYPE_LRU_HASH, 44, 8),
    ("IDENTITIES", TYPE_LPM_TRIE, 21, 4),
    ("LOCAL_ADDRS", TYPE_HASH, 17, 4),
    ("POLICY_CIDR", TYPE_HASH_OF_MAPS, 12, 4),
    ("POLICY_CIDR/inner", TYPE_LPM_TRIE, 21, 16),
    ("POLICY_IDENTITY", TYPE_HASH_OF_MAPS, 12, 4),
    ("POLICY_IDENTITY/inner", TYPE_HASH, 4, 16),
    ("POLICY_PORT", TYPE_HASH_OF_MAPS, 12, 4),
    ("POLICY_PORT/inner", TYPE_LPM_TRIE, 7, 16),
    ("POLICY_SPILL", TYPE_HASH_OF_MAPS, 12, 4),
    ("POLICY_SPILL/inner", TYPE_HASH, 12, 8),
    ("RULE_COUNTERS", TYPE_ARRAY, 4, 16),
    ("SERVICES", TYPE_HASH, 20, 4),
];

/// (version, fingerprint of its [`RECORDED`] table), oldest first. Append
/// only: an entry once released is never edited.
pub const HISTORY: &[(u32, u64)] = &[
    (2, 0x2067_6a5c_7ac9_2678),
    // Each pod's own conntrack and fragment tables (`CONNTRACK_POD`,
    // `FRAGMENTS_POD`); `FragValue`'s third field became an expiry tick.
    (3, 0x9c94_498c_6388_5198),
    // ClusterNetworkPolicy: `DirPolicy` gained the `admin`, `deny` and
    // `pass` bit masks and `open`; the spill table's value became a
    // `SpillValue` (the first spilled group and its action).
    (4, 0x9831_a5d3_7211_53df),
    // `ENDPOINT_CELLS`: a copy of each endpoint record that the
    // classifiers find without a hash lookup.
    (5, 0x166e_ea02_0b7d_771a),
];

/// FNV-1a over the table's text: a change of any number or name changes it.
pub const fn fingerprint(table: &[MapLayout]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < table.len() {
        let (name, t, k, v) = table[i];
        let bytes = name.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            h = (h ^ bytes[j] as u64).wrapping_mul(PRIME);
            j += 1;
        }
        let nums = [t, k, v];
        let mut n = 0;
        while n < nums.len() {
            h = (h ^ 0xff).wrapping_mul(PRIME);
            h = (h ^ nums[n] as u64).wrapping_mul(PRIME);
            n += 1;
        }
        h = (h ^ b'\n' as u64).wrapping_mul(PRIME);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use core::mem::size_of;

    fn recorded(name: &str) -> (u32, u32) {
        let (_, _, k, v) = RECORDED
            .iter()
            .find(|m| m.0 == name)
            .unwrap_or_else(|| panic!("{name} is not in layout::RECORDED"));
        (*k, *v)
    }

    fn size<T>() -> u32 {
        size_of::<T>() as u32
    }

    /// A pinned key or value changed size: bump VERSION, update RECORDED
    /// and append to HISTORY.
    #[test]
    fn pinned_structs_match_the_recorded_table() {
        // LPM keys are the 4-byte prefix length followed by the data part.
        let lpm = |data: u32| 4 + data;
        let want = [
            ("CONFIG", (4, size::<Config>())),
            ("CONNTRACK", (size::<CtKey>(), size::<CtValue>())),
            ("CONNTRACK_POD", (4, 4)),
            ("CONNTRACK_POD/inner", (size::<CtKey>(), size::<CtValue>())),
            ("COUNTERS", (4, size::<Counters>())),
            ("ENDPOINTS", (4, size::<Endpoint>())),
            ("ENDPOINT_CELLS", (4, 4)),
            ("ENDPOINT_CELLS/inner", (4, size::<EndpointCell>())),
            ("EVENTS_LOST", (4, 8)),
            ("FRAGMENTS", (size::<FragKey>(), size::<FragValue>())),
            ("FRAGMENTS_POD", (4, 4)),
            (
                "FRAGMENTS_POD/inner",
                (size::<FragKey>(), size::<FragValue>()),
            ),
            ("IDENTITIES", (lpm(size::<IpKey>()), 4)),
            ("LOCAL_ADDRS", (size::<IpKey>(), 4)),
            ("POLICY_CIDR", (size::<PolicyKey>(), 4)),
            (
                "POLICY_CIDR/inner",
                (lpm(size::<IpKey>()), size::<RuleBits>()),
            ),
            ("POLICY_IDENTITY", (size::<PolicyKey>(), 4)),
            ("POLICY_IDENTITY/inner", (4, size::<RuleBits>())),
            ("POLICY_PORT", (size::<PolicyKey>(), 4)),
            (
                "POLICY_PORT/inner",
                (lpm(size::<PortKey>()), size::<RuleBits>()),
            ),
            ("POLICY_SPILL", (size::<PolicyKey>(), 4)),
            (
                "POLICY_SPILL/inner",
                (size::<SpillKey>(), size::<SpillValue>()),
            ),
            ("RULE_COUNTERS", (4, size::<RuleCounter>())),
            ("SERVICES", (size::<ServiceKey>(), 4)),
        ];
        for (name, sizes) in want {
            assert_eq!(
                recorded(name),
                sizes,
                "map {name}: the key/value sizes changed; bump layout::VERSION, \
                 record the new table in layout::RECORDED and append to layout::HISTORY"
            );
        }
        assert_eq!(
            size::<Event>(),
            64,
            "EVENTS records changed: bump layout::VERSION"
        );
    }

    /// The table changed without a new version (or the version without
    /// recording its table).
    #[test]
    fn the_recorded_table_belongs_to_this_version() {
        let (last_version, last_print) = *HISTORY.last().expect("HISTORY is empty");
        assert_eq!(
            last_version, VERSION,
            "layout::VERSION is {VERSION} but layout::HISTORY ends at {last_version}"
        );
        assert_eq!(
            fingerprint(RECORDED),
            last_print,
            "layout::RECORDED changed: bump layout::VERSION and append \
             ({}, {:#x}) to layout::HISTORY",
            VERSION + 1,
            fingerprint(RECORDED)
        );
        for w in HISTORY.windows(2) {
            assert!(w[0].0 < w[1].0, "layout::HISTORY versions must increase");
            assert_ne!(w[0].1, w[1].1, "two layout versions with one table");
        }
        assert!(
            RECORDED.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by name"
        );
        const { assert!(LEGACY < VERSION && CONNTRACK_SINCE <= VERSION) };
    }
}
