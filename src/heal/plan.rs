//! The healer's decisions, as pure functions of what it has learned: no I/O,
//! so each rule is a row in a table test. The worker (`heal`) gathers the
//! inputs from the store and the peers, and carries the decisions out.

use std::collections::BTreeMap;

use crate::protocol::{SyncEntry, Version};
use crate::store::digest::Digest;

/// What a peer knows of one file, for the choice of what to adopt.
type Key<'a> = (&'a str, &'a str);

/// The files of one bucket this server should take from a peer: those the
/// peer has at a newer version than this server (a tombstone too: it wins
/// over any older version). A tombstone for a file this server has no entry
/// of is not taken: there is nothing here for it to delete, and tombstones
/// are dropped server by server (see [`drop_tombstones`]).
pub fn adopt(mine: &[SyncEntry], theirs: &[SyncEntry]) -> Vec<SyncEntry> {
    let mine: BTreeMap<Key<'_>, Version> = mine
        .iter()
        .map(|e| ((e.owner.as_str(), e.name.as_str()), e.version))
        .collect();
    theirs
        .iter()
        .filter(|e| match mine.get(&(e.owner.as_str(), e.name.as_str())) {
            Some(&v) => e.version > v,
            None => !e.deleted,
        })
        .cloned()
        .collect()
}

/// Where to fetch a missing chunk from, in order: its other holders under
/// the table (they should have it), then every other reachable server (a
/// holder under the previous table may still have it after a ring change).
pub fn sources(me: &str, holders: &[String], reachable: &[String]) -> Vec<String> {
    let mut out: Vec<String> = holders
        .iter()
        .filter(|h| *h != me && reachable.contains(h))
        .cloned()
        .collect();
    for peer in reachable {
        if peer != me && !out.contains(peer) {
            out.push(peer.clone());
        }
    }
    out
}

/// What a holder said about a chunk this server holds beyond its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// It holds the chunk at this version.
    Yes,
    /// It does not (or holds another version).
    No,
    /// It did not answer.
    Unknown,
}

/// Whether this server may drop a copy the table no longer gives it: only
/// once every one of the chunk's holders under the table (this server not
/// among them) has it, every member answers, and all agree on the ring. A
/// copy goes only when `k` others exist.
pub fn may_drop_copy(
    me: &str,
    holders: &[(String, Held)],
    all_reachable: bool,
    agreed: bool,
) -> bool {
    all_reachable
        && agreed
        && !holders.is_empty()
        && holders
            .iter()
            .all(|(name, held)| name != me && *held == Held::Yes)
}

/// Which old tombstones this server may drop: those in buckets whose digest
/// is the same on every member (so no member holds the file at an older,
/// live version: tombstones are not in digests, live files are). A member
/// that did not answer (`None`) keeps every tombstone.
pub fn drop_tombstones<T: Clone>(
    tombstones: &[(u16, T)],
    mine: &BTreeMap<u16, Digest>,
    peers: &[Option<BTreeMap<u16, Digest>>],
) -> Vec<T> {
    tombstones
        .iter()
        .filter(|(bucket, _)| {
            let Some(my) = mine.get(bucket) else {
                return false;
            };
            peers.iter().all(|peer| {
                peer.as_ref()
                    .and_then(|digests| digests.get(bucket))
                    .is_some_and(|theirs| theirs == my)
            })
        })
        .map(|(_, t)| t.clone())
        .collect()
}

/// What to do about a server hints name (writers could not give it copies):
/// forget the hints once its files match ours and it lacks no chunk (its
/// `SyncRoot` says both), nudge it while not, wait while it is down.
#[derive(Debug, PartialEq, Eq)]
pub enum Nudge {
    Forget,
    HealNow,
    Wait,
}

pub fn nudge(my_root: Digest, theirs: Option<(Digest, u64)>) -> Nudge {
    match theirs {
        None => Nudge::Wait,
        // The same files, and it lacks no chunk of them.
        Some((root, 0)) if root == my_root => Nudge::Forget,
        Some(_) => Nudge::HealNow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, gen: u64, deleted: bool) -> SyncEntry {
        SyncEntry {
            owner: "alice".into(),
            name: name.into(),
            version: Version { gen, writer: 0 },
            deleted,
        }
    }

    #[test]
    fn adopt_takes_what_is_newer_elsewhere() {
        // (mine, theirs, adopted?)
        let table = [
            (None, Some(e("f", 1, false)), true), // a file we never saw
            (Some(e("f", 1, false)), Some(e("f", 2, false)), true), // newer version wins
            (Some(e("f", 2, false)), Some(e("f", 1, false)), false), // older never overwrites
            (Some(e("f", 2, false)), Some(e("f", 2, false)), false), // same
            (Some(e("f", 1, false)), Some(e("f", 2, true)), true), // tombstone wins over older
            (Some(e("f", 3, false)), Some(e("f", 2, true)), false), // newer write beats old delete
            (Some(e("f", 2, true)), Some(e("f", 1, false)), false), // deleted stays deleted
            (None, Some(e("f", 2, true)), false), // nothing here to delete
            (Some(e("f", 1, true)), Some(e("f", 2, true)), true), // newer tombstone
        ];
        for (i, (mine, theirs, adopted)) in table.into_iter().enumerate() {
            let mine: Vec<_> = mine.into_iter().collect();
            let theirs: Vec<_> = theirs.into_iter().collect();
            let got = adopt(&mine, &theirs);
            assert_eq!(!got.is_empty(), adopted, "row {i}");
        }
        // Several files at once: only the right ones.
        let mine = [e("a", 5, false), e("b", 5, false)];
        let theirs = [e("a", 6, false), e("b", 4, false), e("c", 1, false)];
        let names: Vec<_> = adopt(&mine, &theirs).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn a_copy_is_dropped_only_when_every_holder_has_it_and_everyone_answers() {
        use Held::*;
        let h = |list: &[(&str, Held)]| -> Vec<(String, Held)> {
            list.iter().map(|(n, x)| (n.to_string(), *x)).collect()
        };
        // (holders, all reachable, agreed, may drop)
        let table = [
            (h(&[("b", Yes), ("c", Yes)]), true, true, true),
            (h(&[("b", Yes), ("c", No)]), true, true, false), // only one other copy
            (h(&[("b", Yes), ("c", Unknown)]), true, true, false), // a holder did not answer
            (h(&[("b", Yes), ("c", Yes)]), false, true, false), // a member is unreachable
            (h(&[("b", Yes), ("c", Yes)]), true, false, false), // views differ
            (h(&[("a", Yes), ("c", Yes)]), true, true, false), // still its own holder
            (h(&[]), true, true, false),                      // no holder known
            (h(&[("b", Yes), ("c", Yes), ("d", Yes)]), true, true, true), // k = 3
            (h(&[("b", Yes), ("c", Yes), ("d", No)]), true, true, false),
        ];
        for (i, (holders, reachable, agreed, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                may_drop_copy("a", &holders, reachable, agreed),
                expected,
                "row {i}"
            );
        }
    }

    #[test]
    fn tombstones_go_only_where_every_member_has_the_same_bucket() {
        let mine: BTreeMap<u16, Digest> = [(1, [1; 16]), (2, [2; 16]), (3, [3; 16])].into();
        let same = Some(mine.clone());
        let differs_in_2 = Some([(1, [1; 16]), (2, [9; 16]), (3, [3; 16])].into());
        let tombstones = [(1u16, "t1"), (2, "t2"), (3, "t3"), (4, "t4")];
        assert_eq!(
            drop_tombstones(&tombstones, &mine, &[same.clone(), same.clone()]),
            ["t1", "t2", "t3"]
        );
        assert_eq!(
            drop_tombstones(&tombstones, &mine, &[same.clone(), differs_in_2]),
            ["t1", "t3"]
        );
        // A member that did not answer: nothing is dropped.
        assert!(drop_tombstones(&tombstones, &mine, &[same, None]).is_empty());
    }

    #[test]
    fn sources_try_the_holders_first() {
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        assert_eq!(
            sources("a", &s(&["a", "c"]), &s(&["b", "c", "d"])),
            s(&["c", "b", "d"])
        );
        // A holder that is down is not tried.
        assert_eq!(sources("a", &s(&["c"]), &s(&["b"])), s(&["b"]));
    }

    #[test]
    fn hints_are_forgotten_once_the_server_matches() {
        assert_eq!(nudge([1; 16], None), Nudge::Wait);
        assert_eq!(nudge([1; 16], Some(([2; 16], 0))), Nudge::HealNow);
        // The same files, but it still lacks chunks of them.
        assert_eq!(nudge([1; 16], Some(([1; 16], 3))), Nudge::HealNow);
        assert_eq!(nudge([1; 16], Some(([1; 16], 0))), Nudge::Forget);
    }
}
