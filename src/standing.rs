//! Whether the servers that answer a client are in one ring together.
//!
//! A server can answer a client (its TLS and users are fine) and yet be cut
//! off from the other servers: another authority's `ca.pem`, another
//! `cluster.key`, a firewall between servers. Its copies are then not in
//! the ring: nobody heals them, and the others do not count them. The
//! client judges each server from every answering server's own account of
//! the ring (its members, those it sees as down, its successor), as the
//! `Ring` and `Status` requests give them, with [`standings`].

/// Where a server that answers the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In one ring with the others, as far as their accounts tell.
    InRing,
    /// By its own account it reaches none of the other members: it is its
    /// own successor, or sees every other member down.
    Alone,
    /// Most of the other servers that answered see it as down, or not as a
    /// member, though it answers the client.
    Apart,
}

impl Standing {
    /// The word STATUS and the prompt show.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::InRing => "in ring",
            Standing::Alone => "alone",
            Standing::Apart => "apart",
        }
    }
}

/// One server's own account of the ring: its answer to `Ring` or `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnView {
    pub name: String,
    /// The members its view has (itself included).
    pub members: Vec<String>,
    /// The members it sees as down.
    pub down: Vec<String>,
    /// Its successor, when known (`Status` says; `Ring` does not).
    pub successor: Option<String>,
}

impl OwnView {
    /// Whether, by its own account, it reaches none of the other members.
    fn alone(&self) -> bool {
        let others: Vec<&String> = self.members.iter().filter(|m| **m != self.name).collect();
        !others.is_empty()
            && (self.successor.as_ref() == Some(&self.name)
                || others.iter().all(|m| self.down.contains(m)))
    }

    /// Whether it counts server `name` out of its ring.
    fn rejects(&self, name: &str) -> bool {
        !self.members.iter().any(|m| m == name) || self.down.iter().any(|d| d == name)
    }
}

/// Each server's standing, from the accounts of those that answered
/// (`None`: did not answer, and so has no standing: it is down).
///
/// A server is [`Standing::Alone`] if its own account says so. Otherwise it
/// is [`Standing::Apart`] if more than half of the other answering servers
/// that are not alone count it out (down, or not a member). A lone server's
/// account does not count against the others: it sees them all down.
pub fn standings(views: &[Option<OwnView>]) -> Vec<Option<Standing>> {
    let voters: Vec<&OwnView> = views.iter().flatten().filter(|v| !v.alone()).collect();
    views
        .iter()
        .map(|view| {
            let view = view.as_ref()?;
            if view.alone() {
                return Some(Standing::Alone);
            }
            let others: Vec<&&OwnView> = voters.iter().filter(|v| v.name != view.name).collect();
            let against = others.iter().filter(|v| v.rejects(&view.name)).count();
            Some(if 2 * against > others.len() {
                Standing::Apart
            } else {
                Standing::InRing
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: [&str; 4] = ["dfs1", "dfs2", "dfs3", "dfs4"];

    fn view(name: &str, down: &[&str], successor: Option<&str>) -> Option<OwnView> {
        Some(OwnView {
            name: name.into(),
            members: FOUR.iter().map(|m| m.to_string()).collect(),
            down: down.iter().map(|d| d.to_string()).collect(),
            successor: successor.map(str::to_string),
        })
    }

    use Standing::{Alone, Apart, InRing};

    #[test]
    fn a_healthy_ring_is_all_in_ring() {
        let views: Vec<_> = FOUR.iter().map(|n| view(n, &[], None)).collect();
        assert_eq!(standings(&views), [Some(InRing); 4]);
    }

    #[test]
    fn a_server_that_is_its_own_successor_or_sees_everyone_down_is_alone() {
        // STATUS: dfs2 is its own successor (its down list may still be empty).
        let views = vec![
            view("dfs1", &["dfs2"], Some("dfs3")),
            view("dfs2", &[], Some("dfs2")),
            view("dfs3", &["dfs2"], Some("dfs4")),
            view("dfs4", &[], Some("dfs1")),
        ];
        assert_eq!(
            standings(&views),
            [Some(InRing), Some(Alone), Some(InRing), Some(InRing)]
        );
        // Ring (no successor): it sees every other member down. Its account
        // does not make the other three look down.
        let views = vec![
            view("dfs1", &["dfs2"], None),
            view("dfs2", &["dfs1", "dfs3", "dfs4"], None),
            view("dfs3", &["dfs2"], None),
            view("dfs4", &["dfs2"], None),
        ];
        assert_eq!(
            standings(&views),
            [Some(InRing), Some(Alone), Some(InRing), Some(InRing)]
        );
    }

    #[test]
    fn a_server_most_others_count_out_is_apart() {
        // dfs2 has not noticed (its successor list is stale), but the
        // others see it down.
        let views = vec![
            view("dfs1", &["dfs2"], None),
            view("dfs2", &[], None),
            view("dfs3", &["dfs2"], None),
            view("dfs4", &[], None),
        ];
        assert_eq!(
            standings(&views),
            [Some(InRing), Some(Apart), Some(InRing), Some(InRing)]
        );
        // Not a member of the others' views at all.
        let mut views: Vec<_> = FOUR.iter().map(|n| view(n, &[], None)).collect();
        for v in views.iter_mut().flatten().filter(|v| v.name != "dfs4") {
            v.members.retain(|m| m != "dfs4");
        }
        assert_eq!(standings(&views)[3], Some(Apart));
        assert_eq!(standings(&views)[..3], [Some(InRing); 3]);
    }

    #[test]
    fn one_voice_of_three_is_not_enough() {
        // dfs3 alone has not yet seen dfs2 come back.
        let views = vec![
            view("dfs1", &[], None),
            view("dfs2", &[], None),
            view("dfs3", &["dfs2"], None),
            view("dfs4", &[], None),
        ];
        assert_eq!(standings(&views), [Some(InRing); 4]);
    }

    #[test]
    fn servers_that_do_not_answer_have_no_standing_and_no_vote() {
        let views = vec![
            view("dfs1", &["dfs3"], None),
            view("dfs2", &["dfs3"], None),
            None,
            view("dfs4", &["dfs3"], None),
        ];
        assert_eq!(
            standings(&views),
            [Some(InRing), Some(InRing), None, Some(InRing)]
        );
        // A single answering server is judged by its own account only.
        assert_eq!(standings(&[view("dfs1", &[], None)]), [Some(InRing)]);
        assert_eq!(
            standings(&[view("dfs1", &["dfs2", "dfs3", "dfs4"], None)]),
            [Some(Alone)]
        );
    }

    #[test]
    fn a_ring_split_in_two_halves_is_not_one_ring() {
        let views = vec![
            view("dfs1", &["dfs3", "dfs4"], None),
            view("dfs2", &["dfs3", "dfs4"], None),
            view("dfs3", &["dfs1", "dfs2"], None),
            view("dfs4", &["dfs1", "dfs2"], None),
        ];
        assert_eq!(standings(&views), [Some(Apart); 4]);
    }

    #[test]
    fn a_ring_of_one_is_not_alone() {
        let one = Some(OwnView {
            name: "dfs1".into(),
            members: vec!["dfs1".into()],
            down: Vec::new(),
            successor: Some("dfs1".into()),
        });
        assert_eq!(standings(&[one]), [Some(InRing)]);
    }
}
