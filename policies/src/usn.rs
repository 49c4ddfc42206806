//! Catching up with a DC by its update sequence numbers (issue 3 of 6, re-containment): the
//! fallback where change notification is refused or not allowed, and the catch-up after a
//! notification connection dropped.
//!
//! Facts (learn.microsoft.com/windows/win32/ad/polling-for-changes-using-usnchanged; see
//! `../shared/notes/directory-facts.md`): `uSNChanged` is per DC and not replicated, so a
//! watermark belongs to one DC, named by its `invocationId`; the rootDSE's `highestCommittedUSN`
//! is that DC's latest, and its `invocationId` is on the NTDS Settings object the rootDSE's
//! `dsServiceName` names; `(uSNChanged>=N)` finds what changed since; a changed `invocationId` (the
//! DC was restored from a backup) voids every watermark of it: only a full read is safe.

/// What was last read from one DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The DC's `invocationId` when it was read.
    pub invocation_id: String,
    /// Everything up to this USN has been seen.
    pub usn: u64,
}

/// What the DC says now: its rootDSE's `highestCommittedUSN`, and the `invocationId` of the NTDS
/// Settings object the rootDSE's `dsServiceName` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcNow {
    pub invocation_id: String,
    pub highest_committed_usn: u64,
}

/// How to catch up with the DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Nothing committed since the watermark.
    UpToDate,
    /// Search the managed accounts' scope with this filter; then the watermark becomes `to`.
    Poll { filter: String, to: u64 },
    /// The watermark cannot be trusted: read every managed account again (then start from `to`).
    FullRead { why: String, to: u64 },
}

/// How to catch up from `stored` (this DC's watermark, if any) to what `now` says.
pub fn catch_up(stored: Option<&Watermark>, now: &DcNow) -> CatchUp {
    let to = now.highest_committed_usn;
    let Some(stored) = stored else {
        return CatchUp::FullRead { why: "no watermark for this DC yet".to_owned(), to };
    };
    if stored.invocation_id != now.invocation_id {
        return CatchUp::FullRead {
            why: format!(
                "the DC's invocationId changed from {} to {} (restored from a backup?): its USNs start over",
                stored.invocation_id, now.invocation_id
            ),
            to,
        };
    }
    if to < stored.usn {
        return CatchUp::FullRead {
            why: format!("the DC's highestCommittedUSN went back from {} to {to}", stored.usn),
            to,
        };
    }
    if to == stored.usn {
        return CatchUp::UpToDate;
    }
    CatchUp::Poll { filter: format!("(uSNChanged>={})", stored.usn + 1), to }
}

/// Whether a change notification about an object is older than what was already read of it
/// (register first, read second: a notification at or below the `uSNChanged` read is stale).
pub fn is_stale(notified_usn_changed: u64, read_usn_changed: Option<u64>) -> bool {
    read_usn_changed.is_some_and(|read| notified_usn_changed <= read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dse(id: &str, usn: u64) -> DcNow {
        DcNow { invocation_id: id.to_owned(), highest_committed_usn: usn }
    }

    fn mark(id: &str, usn: u64) -> Watermark {
        Watermark { invocation_id: id.to_owned(), usn }
    }

    #[test]
    fn catch_up_cases() {
        let poll = |from: u64, to: u64| CatchUp::Poll { filter: format!("(uSNChanged>={from})"), to };
        // (what, stored, now, expected: None means a full read to now's USN)
        let cases: Vec<(&str, Option<Watermark>, DcNow, Option<CatchUp>)> = vec![
            ("first contact", None, dse("a", 100), None),
            ("nothing new", Some(mark("a", 100)), dse("a", 100), Some(CatchUp::UpToDate)),
            ("changes since", Some(mark("a", 100)), dse("a", 130), Some(poll(101, 130))),
            ("restored from a backup", Some(mark("a", 100)), dse("b", 130), None),
            ("USN went back", Some(mark("a", 100)), dse("a", 90), None),
        ];
        for (what, stored, now, expected) in cases {
            let got = catch_up(stored.as_ref(), &now);
            match expected {
                Some(expected) => assert_eq!(got, expected, "{what}"),
                None => assert!(
                    matches!(&got, CatchUp::FullRead { to, .. } if *to == now.highest_committed_usn),
                    "{what}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_full_read_says_why() {
        let got = catch_up(Some(&mark("a", 100)), &dse("b", 5));
        assert!(matches!(&got, CatchUp::FullRead { why, .. } if why.contains("invocationId changed from a to b")));
    }

    #[test]
    fn notifications_at_or_below_what_was_read_are_stale() {
        assert!(is_stale(40, Some(40)));
        assert!(is_stale(39, Some(40)));
        assert!(!is_stale(41, Some(40)));
        assert!(!is_stale(1, None), "an object not read yet: every notification counts");
    }
}
